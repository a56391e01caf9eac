"""ContainerSpec: every `corral run` option, validated before anything is created.

``build_spec`` takes the options as typed on the command line (strings and tuples, keyword
arguments named after the long options) and returns a frozen ContainerSpec, or raises
SpecError naming the option, the value and the allowed form. It reads the host (the rootfs
and volume sources must exist, the caller's environment for ``-e K``, the clocks for
``--time-offset``, CapEff for ``--cap-add``) but creates nothing. Its config.json form is in
runtime/container/config.py.

Docker's rules, followed here: names match ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``; a generated name
is docker-like ``adjective_surname``; the environment starts from docker's default PATH and
HOSTNAME, ``-e K=V`` replaces or appends, ``-e K`` takes K from the caller's environment and
removes K when the caller has none. The hostname defaults to the container's name, or with
``--network host`` to the host's own hostname (docker does the latter; for the former docker
uses the short id, which does not exist before the state store assigns it).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, cast

from runtime.container.limits import ContainerLimits, parse_limits
from runtime.container.volumes import Volume, parse_volumes
from runtime.security.capabilities import User, effective_set, normalize, parse_user

if TYPE_CHECKING:  # runtime.network is imported only for -p: the whole package loads with it
    from runtime.network.ports import PortSpec

SPEC_VERSION = 1
NAME_FORM = "[a-zA-Z0-9][a-zA-Z0-9_.-]* up to 128 characters"
HOSTNAME_FORM = "[a-zA-Z0-9][a-zA-Z0-9_.-]* up to 64 characters (the kernel's __NEW_UTS_LEN)"
TIME_OFFSET_FORM = "monotonic=SECONDS,boottime=SECONDS (either or both; decimals allowed)"
# moby's daemon default (oci.DefaultPathEnv for Linux).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USERNS_MODES = ("host", "auto")
NETWORK_MODES = ("none", "host", "bridge")
TIME_CLOCKS = ("monotonic", "boottime")
# kernel/time/namespace.c: an offset is refused (ERANGE) unless clock + offset stays within
# 0 .. KTIME_SEC_MAX / 2 seconds.
TIMENS_MAX_SECONDS = (2**63 - 1) // 10**9 // 2

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_HOSTNAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_SECONDS = re.compile(r"[+-]?(\d+(\.\d{0,9})?|\.\d{1,9})")

UsernsMode = Literal["host", "auto"]
NetworkMode = Literal["none", "host", "bridge"]

# fmt: off
_ADJECTIVES = (
    "agile", "bold", "brave", "calm", "clever", "cool", "crisp", "eager", "fair", "fast",
    "fond", "gentle", "glad", "happy", "keen", "kind", "lively", "loyal", "lucid", "merry",
    "modest", "neat", "nimble", "noble", "patient", "plucky", "proud", "quick", "quiet",
    "sharp", "shy", "steady", "stoic", "sunny", "swift", "tender", "tidy", "vivid", "warm",
    "wise", "witty", "zen",
)
_SURNAMES = (
    "babbage", "bardeen", "bohr", "boole", "cerf", "curie", "darwin", "dijkstra", "euler",
    "faraday", "fermi", "feynman", "franklin", "galois", "gauss", "hamilton", "hopper",
    "hypatia", "johnson", "kepler", "knuth", "lamarr", "lovelace", "maxwell", "meitner",
    "mirzakhani", "newton", "noether", "pascal", "planck", "ramanujan", "ritchie", "sammet",
    "shannon", "somerville", "thompson", "torvalds", "turing", "wirth", "wu", "yalow",
)
# fmt: on


class SpecError(ValueError):
    """A `corral run` option whose value cannot be used; nothing was created."""

    def __init__(self, option: str, value: object, why: str, allowed: str = "") -> None:
        tail = f"; allowed: {allowed}" if allowed else ""
        super().__init__(f"{option} {value!r}: {why}{tail}")
        self.option = option
        self.value = value

    @classmethod
    def wrap(cls, option: str, value: object, error: Exception) -> SpecError:
        """A SpecError carrying another parser's message (which names the value and form)."""
        spec_error = cls(option, value, str(error))
        text = str(error)
        spec_error.args = (text if text.startswith(option) else f"{option}: {text}",)
        return spec_error


@dataclass(frozen=True)
class TimeOffsets:
    """Time-namespace offsets in nanoseconds (time_namespaces(7): monotonic and boottime)."""

    monotonic_ns: int = 0
    boottime_ns: int = 0

    def lines(self) -> str:
        """The text for /proc/PID/timens_offsets: "CLOCK SECS NANOSECS" per line, nanoseconds
        0..999999999 with the seconds floored (-1.5 s is "-2 500000000", as the kernel reads
        it). Written before the first process enters the time namespace."""
        out = []
        for clock, ns in (("monotonic", self.monotonic_ns), ("boottime", self.boottime_ns)):
            if ns:
                seconds, nanos = divmod(ns, 10**9)
                out.append(f"{clock} {seconds} {nanos}\n")
        return "".join(out)


@dataclass(frozen=True)
class ContainerSpec:
    """One container's configuration, as `corral run` was asked (config.json)."""

    name: str
    rootfs: str  # absolute, symlinks resolved
    command: tuple[str, ...]
    env: tuple[str, ...]  # "K=V", in order
    workdir: str
    user: User
    hostname: str
    volumes: tuple[Volume, ...]
    read_only: bool
    labels: tuple[tuple[str, str], ...]  # (key, value) in order, keys unique
    init: bool
    limits: ContainerLimits
    userns: UsernsMode
    time_offsets: TimeOffsets
    network: NetworkMode
    cap_add: tuple[str, ...]  # canonical CAP_ names or ALL
    cap_drop: tuple[str, ...]
    detach: bool
    rm: bool
    generated_name: bool = False  # the name was made up, not given with --name
    publish: tuple[PortSpec, ...] = ()  # -p/--publish, only with --network bridge

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def generate_name() -> str:
    """A docker-like ``adjective_surname`` name (about 1700 of them: the state store picks
    another when one is taken)."""
    import secrets  # here: its hashlib costs every other start 3 ms

    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_SURNAMES)}"


def renamed(spec: ContainerSpec, name: str) -> ContainerSpec:
    """``spec`` under another name: a hostname derived from the old name (and HOSTNAME when it
    is that hostname) follows it. For the state store's retry after a generated name was
    taken."""
    name = check_name(name)
    if spec.hostname != _default_hostname(spec.name, spec.network):
        return dataclasses.replace(spec, name=name)
    hostname = _default_hostname(name, spec.network)
    old = f"HOSTNAME={spec.hostname}"
    env = tuple(f"HOSTNAME={hostname}" if e == old else e for e in spec.env)
    return dataclasses.replace(spec, name=name, hostname=hostname, env=env)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SpecError("--name", name, "not a valid container name", NAME_FORM)
    return name


def _default_hostname(name: str, network: str) -> str:
    return os.uname().nodename if network == "host" else name[:64]


def _check_rootfs(rootfs: str) -> str:
    path = os.path.realpath(rootfs)
    if not os.path.exists(path):
        raise SpecError("ROOTFS", rootfs, "does not exist", "an existing directory")
    if not os.path.isdir(path):
        raise SpecError("ROOTFS", rootfs, "is not a directory", "an existing directory")
    with os.scandir(path) as entries:
        if next(entries, None) is None:
            raise SpecError(
                "ROOTFS", rootfs, "is empty", "a root filesystem, e.g. `corral rootfs busybox DIR`"
            )
    return path


def _check_command(command: Sequence[str]) -> tuple[str, ...]:
    if not command or not command[0]:
        raise SpecError("CMD", tuple(command), "no command given", "ROOTFS -- CMD [ARG...]")
    for arg in command:
        if "\0" in arg:
            raise SpecError("CMD", arg, "contains a NUL byte", "execve(2) arguments without NUL")
    return tuple(command)


def _build_env(
    items: Iterable[str], hostname: str, caller_env: Mapping[str, str]
) -> tuple[str, ...]:
    """moby's ReplaceOrAppendEnvValues over docker's defaults (PATH, HOSTNAME)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or "\0" in item:
            raise SpecError("-e/--env", item, "no variable name or a NUL byte", "K=V or K")
        if sep:
            env[key] = value
        elif key in caller_env:
            env[key] = caller_env[key]
        else:
            env.pop(key, None)  # docker: `-e K` with K unset here removes it
    return tuple(f"{k}={v}" for k, v in env.items())


def _check_workdir(workdir: str | None) -> str:
    if workdir is None:
        return "/"
    if not workdir.startswith("/") or "\0" in workdir:
        raise SpecError("-w/--workdir", workdir, "not an absolute path", "an absolute path")
    return os.path.normpath(workdir).replace("//", "/")


def _parse_labels(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    labels: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise SpecError("--label", item, "no key", "K=V (or K for an empty value)")
        labels[key] = value
    return tuple(labels.items())


def parse_time_offsets(values: Iterable[str]) -> TimeOffsets:
    """``--time-offset`` values: seconds (up to 9 decimals) per clock, checked against the
    current clock as the kernel will check them (the clocks only grow after this)."""
    offsets: dict[str, int] = {}
    option = "--time-offset"
    for value in values:
        for item in value.split(","):
            clock, sep, seconds = item.strip().partition("=")
            if clock not in TIME_CLOCKS or not sep:
                why = f"unknown clock {clock!r}" if sep else f"{item!r} is not CLOCK=SECONDS"
                raise SpecError(option, value, why, TIME_OFFSET_FORM)
            if clock in offsets:
                raise SpecError(option, value, f"{clock} given twice", TIME_OFFSET_FORM)
            if not _SECONDS.fullmatch(seconds):
                why = f"{seconds!r} is not a number of seconds with at most 9 decimals"
                raise SpecError(option, value, why, TIME_OFFSET_FORM)
            offsets[clock] = _check_offset(option, value, clock, seconds)
    return TimeOffsets(offsets.get("monotonic", 0), offsets.get("boottime", 0))


def _check_offset(option: str, value: str, clock: str, seconds: str) -> int:
    try:
        ns = int(Decimal(seconds) * 10**9)
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise SpecError(option, value, f"{seconds!r} is not a number", TIME_OFFSET_FORM) from None
    now = time.clock_gettime_ns(
        time.CLOCK_MONOTONIC if clock == "monotonic" else time.CLOCK_BOOTTIME
    )
    if now + ns < 0 or (now + ns) // 10**9 > TIMENS_MAX_SECONDS:
        why = (
            f"{clock} would be {(now + ns) / 1e9:.0f} s in the container; the kernel keeps "
            f"it within 0..{TIMENS_MAX_SECONDS} s (it is {now / 1e9:.0f} s now)"
        )
        raise SpecError(option, value, why, TIME_OFFSET_FORM)
    return ns


def check_choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(option, value, "unknown mode", " or ".join(allowed))
    return value


def _check_caps(cap_add: Iterable[str], cap_drop: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    checked = []
    for option, names in (("--cap-add", cap_add), ("--cap-drop", cap_drop)):
        canonical = []
        for cap in names:
            try:
                canonical.append(normalize(cap))
            except ValueError as e:
                raise SpecError.wrap(option, cap, e) from e
        checked.append(tuple(dict.fromkeys(canonical)))
    try:
        effective_set(checked[0], checked[1])  # an added capability must be grantable here
    except ValueError as e:
        raise SpecError.wrap("--cap-add", checked[0], e) from e
    return checked[0], checked[1]


def _limits(options: Mapping[str, Any]) -> ContainerLimits:
    try:
        return parse_limits(**options)
    except ValueError as e:
        what = str(getattr(e, "what", "limits"))
        option = what if what.startswith("--") else "--" + what.replace("_", "-")
        raise SpecError.wrap(option, getattr(e, "value", ""), e) from e


def default_network() -> str:
    """--network when not given: CORRAL_NETWORK, else bridge for root (docker's and
    podman's default), none otherwise (an unprivileged user cannot make a bridge)."""
    return os.environ.get("CORRAL_NETWORK") or ("bridge" if os.geteuid() == 0 else "none")


def _publish(network: str, publish: Iterable[str]) -> tuple[PortSpec, ...]:
    if not publish:
        return ()
    from runtime.network.ports import parse_publish_all

    specs = parse_publish_all(publish)
    if specs and network != "bridge":
        raise SpecError("-p/--publish", specs[0].__str__(), f"needs --network bridge, "
                        f"not {network}", "--network bridge -p HOSTPORT:CONTAINERPORT")  # fmt: skip
    return specs


def build_spec(
    *,
    rootfs: str,
    command: Sequence[str],
    name: str | None = None,
    detach: bool = False,
    rm: bool = False,
    env: Iterable[str] = (),
    workdir: str | None = None,
    user: str | None = None,
    hostname: str | None = None,
    volume: Iterable[str] = (),
    read_only: bool = False,
    label: Iterable[str] = (),
    init: bool = False,
    userns: str = "host",
    time_offset: str | Iterable[str] | None = None,
    network: str = "none",
    cap_add: Iterable[str] = (),
    cap_drop: Iterable[str] = (),
    publish: Iterable[str] = (),
    caller_env: Mapping[str, str] | None = None,
    **limits: Any,
) -> ContainerSpec:
    """Validate every `corral run` option (keyword names as click gives them: ``env``,
    ``volume``, ``label`` are the repeated ``-e``, ``-v``, ``--label``; ``limits`` are
    parse_limits' keywords: memory, memory_high, memory_swap, cpus, cpu_weight, cpuset_cpus,
    pids_limit, device_{read,write}_{bps,iops}). ``caller_env`` defaults to os.environ.
    ``publish`` are the -p values (with network "bridge" only)."""
    generated = name is None
    name = check_name(generate_name() if name is None else name)
    network_mode = cast(NetworkMode, check_choice("--network", network, NETWORK_MODES))
    if hostname is None:
        hostname = _default_hostname(name, network_mode)
    elif not _HOSTNAME.fullmatch(hostname):
        raise SpecError("--hostname", hostname, "not a valid hostname", HOSTNAME_FORM)
    try:
        process_user = parse_user(user) if user is not None else User()
    except ValueError as e:
        raise SpecError.wrap("-u/--user", user, e) from e
    try:
        volumes = parse_volumes(volume)
    except ValueError as e:
        raise SpecError.wrap("-v/--volume", tuple(volume), e) from e
    offsets = [time_offset] if isinstance(time_offset, str) else list(time_offset or ())
    adds, drops = _check_caps(cap_add, cap_drop)
    return ContainerSpec(
        name=name,
        rootfs=_check_rootfs(rootfs),
        command=_check_command(command),
        env=_build_env(env, hostname, os.environ if caller_env is None else caller_env),
        workdir=_check_workdir(workdir),
        user=process_user,
        hostname=hostname,
        volumes=volumes,
        read_only=read_only,
        labels=_parse_labels(label),
        init=init,
        limits=_limits(limits),
        userns=cast(UsernsMode, check_choice("--userns", userns, USERNS_MODES)),
        time_offsets=parse_time_offsets(offsets),
        network=network_mode,
        cap_add=adds,
        cap_drop=drops,
        detach=detach,
        rm=rm,
        generated_name=generated,
        publish=_publish(network_mode, publish),
    )
