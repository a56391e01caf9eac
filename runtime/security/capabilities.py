"""Linux capabilities of a container's process: names, docker's --cap-add/--cap-drop rules, the
five sets (capabilities(7)) and applying them with the user switch as runc does.

Kernel interfaces: capget(2)/capset(2), prctl(2) PR_CAPBSET_DROP, PR_SET_KEEPCAPS and
PR_CAP_AMBIENT, setgroups(2)/setresgid(2)/setresuid(2), /proc/sys/kernel/cap_last_cap and the
Cap* lines of /proc/PID/status.

Which sets a container gets (moby oci/oci.go SetCapabilities, checked against its source): for
uid 0 docker puts its list in bounding, effective and permitted; for any other uid only in
bounding, leaving effective and permitted empty "to match what execve does" (a non-root
program gains capabilities only from file capabilities or setuid-root binaries, up to the
bounding set, and no_new_privs blocks even that). Docker sets no inheritable capabilities
since CVE-2022-24769 (inheritable + ambient would hand them to non-root programs) and never
sets ambient ones. ``docker_sets`` follows that; ``from_oci`` takes all five sets verbatim
from an OCI config, as runc does, ambient included.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from runtime import syscalls

# capability number -> name, <linux/capability.h> (CAP_CHECKPOINT_RESTORE is Linux 5.9).
# fmt: off
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",  # 0-3
    "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",  # 4-8
    "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",  # 9-11
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",  # 12-15
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",  # 16-19
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",  # 20-23
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",  # 24-27
    "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",  # 28-31
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",  # 32-35
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",  # 36-39
    "CAP_CHECKPOINT_RESTORE",  # 40
)
# fmt: on
CAP_NUMBER: dict[str, int] = {name: number for number, name in enumerate(CAPABILITIES)}

# moby oci/caps/defaults.go DefaultCapabilities.
DOCKER_DEFAULT: frozenset[str] = frozenset(
    {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    }
)  # fmt: skip

ALL = "ALL"
STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


class CapabilityError(ValueError):
    """A capability name or set that cannot be granted; raised before anything changes."""


def kernel_last_cap(path: str | os.PathLike[str] = "/proc/sys/kernel/cap_last_cap") -> int:
    """The highest capability number the running kernel knows."""
    return int(Path(path).read_text())


def parse_status_masks(text: str) -> dict[str, int]:
    """The CapInh/CapPrm/CapEff/CapBnd/CapAmb masks of a /proc/PID/status text."""
    masks = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_KEYS:
            masks[key] = int(value.strip(), 16)
    missing = [k for k in STATUS_KEYS if k not in masks]
    if missing:
        raise ValueError(f"/proc/PID/status text lacks {', '.join(missing)}")
    return masks


def read_status_masks(path: str | os.PathLike[str] = "/proc/self/status") -> dict[str, int]:
    """``parse_status_masks`` of /proc/self/status (or another process's status file)."""
    return parse_status_masks(Path(path).read_text())


def to_mask(names: Iterable[str]) -> int:
    """Bit N set for each capability N named (canonical CAP_ names)."""
    return sum(1 << CAP_NUMBER[name] for name in set(names))


def from_mask(mask: int) -> frozenset[str]:
    """The canonical names of the bits set in ``mask`` (bits past CAP_CHECKPOINT_RESTORE are
    capabilities newer than this table and are left out)."""
    return frozenset(name for number, name in enumerate(CAPABILITIES) if mask >> number & 1)


def normalize(name: str) -> str:
    """Docker's spelling rules: any case, CAP_ prefix optional; ``ALL`` stays ``ALL``."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    canonical = upper if upper.startswith("CAP_") else "CAP_" + upper
    if canonical not in CAP_NUMBER:
        allowed = ", ".join(c.removeprefix("CAP_") for c in CAPABILITIES)
        raise CapabilityError(
            f"unknown capability {name!r}: allowed are ALL and {allowed} (any case, with or "
            "without the CAP_ prefix; see capabilities(7))"
        )
    return canonical


def _check_grantable(caps: Iterable[str], available: frozenset[str], last_cap: int) -> None:
    for cap in sorted(caps, key=CAP_NUMBER.__getitem__):
        if CAP_NUMBER[cap] > last_cap:
            raise CapabilityError(
                f"{cap} ({CAP_NUMBER[cap]}) is not supported by the running kernel: "
                f"/proc/sys/kernel/cap_last_cap is {last_cap}"
            )
        if cap not in available:
            raise CapabilityError(
                f"{cap} is not available in this environment: corral's own effective set "
                "(CapEff in /proc/self/status) lacks it, so it cannot be granted"
            )


def effective_set(
    cap_add: Iterable[str] = (),
    cap_drop: Iterable[str] = (),
    *,
    available: frozenset[str] | None = None,
    last_cap: int | None = None,
) -> frozenset[str]:
    """The container's capabilities from --cap-add/--cap-drop, as moby's TweakCapabilities:
    add ALL gives every available capability but the dropped ones; otherwise drop ALL gives
    exactly the added ones; otherwise docker's default minus the dropped plus the added (a
    capability both added and dropped is added). ``available`` defaults to this process's
    CapEff (as moby's GetAllCapabilities), ``last_cap`` to the kernel's cap_last_cap.

    An added capability must be known, known to the running kernel and available. A dropped
    one must only be known: dropping what the environment lacks is harmless (moby refuses
    it; corral does not)."""
    adds = [normalize(c) for c in cap_add]
    drops = [normalize(c) for c in cap_drop]
    if last_cap is None:
        last_cap = kernel_last_cap()
    if available is None:
        available = from_mask(read_status_masks()["CapEff"])
    available = frozenset(c for c in available if CAP_NUMBER[c] <= last_cap)
    _check_grantable((c for c in adds if c != ALL), available, last_cap)
    if ALL in adds:
        return available - set(drops)
    if ALL in drops:
        return frozenset(c for c in adds if c != ALL)
    return (DOCKER_DEFAULT - set(drops)) | set(adds)


@dataclass(frozen=True)
class CapabilitySets:
    """The five capability sets of the container's process (canonical CAP_ names).

    Construction refuses what capset(2) and PR_CAP_AMBIENT_RAISE would refuse: effective
    outside permitted, inheritable outside bounding, ambient outside permitted and
    inheritable."""

    bounding: frozenset[str] = frozenset()
    effective: frozenset[str] = frozenset()
    permitted: frozenset[str] = frozenset()
    inheritable: frozenset[str] = frozenset()
    ambient: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for f in fields(self):
            unknown = sorted(set(getattr(self, f.name)) - CAP_NUMBER.keys())
            if unknown:
                raise CapabilityError(f"{f.name}: unknown capabilities {unknown}")
        rules = (
            ("effective", self.effective, "permitted", self.permitted),
            ("inheritable", self.inheritable, "bounding", self.bounding),
            ("ambient", self.ambient, "permitted", self.permitted),
            ("ambient", self.ambient, "inheritable", self.inheritable),
        )
        for name, subset, outer_name, outer in rules:
            extra = sorted(subset - outer)
            if extra:
                raise CapabilityError(
                    f"{name} capabilities {extra} are not in the {outer_name} set: the kernel "
                    f"allows {name} only within {outer_name} (capabilities(7))"
                )

    def masks(self) -> dict[str, int]:
        """The masks /proc/PID/status shows for these sets, keyed as it names them."""
        return {
            "CapInh": to_mask(self.inheritable),
            "CapPrm": to_mask(self.permitted),
            "CapEff": to_mask(self.effective),
            "CapBnd": to_mask(self.bounding),
            "CapAmb": to_mask(self.ambient),
        }


def docker_sets(caps: frozenset[str], uid: int) -> CapabilitySets:
    """The sets docker gives a container whose capabilities are ``caps`` (from
    ``effective_set``) and whose process runs as ``uid`` (see the module docstring)."""
    if uid == 0:
        return CapabilitySets(bounding=caps, effective=caps, permitted=caps)
    return CapabilitySets(bounding=caps)


def from_oci(
    process_capabilities: Mapping[str, object] | None, *, last_cap: int | None = None
) -> tuple[CapabilitySets, tuple[str, ...]]:
    """The sets of an OCI config's ``process.capabilities`` (absent: every set empty, as runc)
    and the names left out because they are unknown or beyond the running kernel, which the
    runtime spec says to warn about rather than fail (runc logs "ignoring unknown or
    unavailable capabilities"). A malformed object raises CapabilityError."""
    obj = process_capabilities or {}
    names = [f.name for f in fields(CapabilitySets)]
    bad_keys = sorted(set(obj) - set(names))
    if bad_keys:
        raise CapabilityError(f"process.capabilities: unknown keys {bad_keys}; allowed {names}")
    limit = kernel_last_cap() if last_cap is None else last_cap
    ignored: list[str] = []
    sets: dict[str, frozenset[str]] = {}
    for key in names:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CapabilityError(f"process.capabilities.{key}: {value!r} is not a list of names")
        usable = [v for v in value if CAP_NUMBER.get(v, limit + 1) <= limit]
        ignored += [v for v in value if v not in usable and v not in ignored]
        sets[key] = frozenset(usable)
    return CapabilitySets(**sets), tuple(ignored)


# -- applying them: runc libcontainer/init_linux.go finalizeNamespace ----------------------------

_ID_MAX = 0xFFFFFFFE  # (uid_t)-1 means "unchanged" to setresuid(2)


@dataclass(frozen=True)
class User:
    """The ids the container's process runs as: ``-u UID[:GID]`` and supplementary groups."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for what, value in [("uid", self.uid), ("gid", self.gid)] + [
            ("supplementary group", g) for g in self.groups
        ]:
            if not 0 <= value <= _ID_MAX:
                raise ValueError(f"{what} {value} is out of range: allowed 0..{_ID_MAX}")


def parse_user(spec: str, groups: Iterable[int] = ()) -> User:
    """``-u UID[:GID]``, numeric. Without GID the group is 0, as runc does for a numeric uid
    that has no /etc/passwd entry. User and group names need the container's /etc/passwd
    and /etc/group and are refused here."""
    uid_text, sep, gid_text = spec.partition(":")
    try:
        uid = int(uid_text, 10)
        gid = int(gid_text, 10) if sep else 0
    except ValueError:
        raise ValueError(
            f"user {spec!r}: expected UID[:GID] with numeric ids, e.g. 1000 or 1000:1000"
        ) from None
    return User(uid, gid, tuple(groups))


def _setgroups_allowed() -> bool:
    # "deny" in a user namespace whose maps were written by an unprivileged writer (and by
    # corral's own --userns auto): setgroups(2) then fails with EPERM. runc skips it then.
    try:
        return Path("/proc/self/setgroups").read_text().strip() != "deny"
    except FileNotFoundError:  # kernels before 3.19
        return True


def _check_holdable(sets: CapabilitySets, last_cap: int) -> None:
    # capset(2) can only shrink permitted, and PR_CAPBSET_DROP can only shrink bounding: a
    # set reaching past what this process holds is refused before anything changes.
    have = read_status_masks()
    held = {"bounding": from_mask(have["CapBnd"]), "permitted": from_mask(have["CapPrm"])}
    for name, wanted, outer in (
        ("bounding", sets.bounding, "bounding"),
        ("permitted", sets.permitted, "permitted"),
        ("inheritable", sets.inheritable, "bounding"),
    ):
        lacking = sorted(c for c in wanted - held[outer] if CAP_NUMBER[c] <= last_cap)
        if lacking:
            raise CapabilityError(
                f"{name} capabilities {lacking} cannot be granted: this process's own "
                f"{outer} set lacks them (Cap{'Bnd' if outer == 'bounding' else 'Prm'} in "
                "/proc/self/status)"
            )


def _switch_user(user: User) -> None:
    if user.groups or _setgroups_allowed():
        os.setgroups(list(user.groups))  # [] clears the groups inherited from corral
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)


def apply(sets: CapabilitySets, user: User, *, last_cap: int | None = None) -> None:
    """Switch to ``user`` and leave exactly ``sets``, in runc's order, in a single-threaded
    process (capabilities and ids are per thread) that still holds CAP_SETPCAP, CAP_SETUID
    and CAP_SETGID:

    1. PR_CAPBSET_DROP every capability outside the bounding set (needs CAP_SETPCAP, so
       before anything is given up);
    2. PR_SET_KEEPCAPS 1, so leaving uid 0 keeps the permitted set (the kernel still clears
       effective and ambient when all of the uids leave 0);
    3. setgroups, setresgid, setresuid (setgroups is skipped when /proc/self/setgroups says
       "deny" and no groups were asked for);
    4. PR_SET_KEEPCAPS 0;
    5. capset effective/permitted/inheritable;
    6. PR_CAP_AMBIENT_CLEAR_ALL, then PR_CAP_AMBIENT_RAISE each ambient capability.

    A credential change also clears the parent-death signal: restore it afterwards
    (runtime.security.process does)."""
    limit = kernel_last_cap() if last_cap is None else last_cap
    _check_holdable(sets, limit)
    bounding = to_mask(sets.bounding)
    for number in range(limit + 1):
        if not bounding >> number & 1:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, number)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    _switch_user(user)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
    syscalls.capset(to_mask(sets.effective), to_mask(sets.permitted), to_mask(sets.inheritable))
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in sorted(sets.ambient, key=CAP_NUMBER.__getitem__):
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, CAP_NUMBER[cap])
