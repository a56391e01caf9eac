"""Process-level hardening of a container's process just before execve, in runc's order.

Kernel interfaces: prlimit(2) (resource.prlimit), /proc/sys/fs/nr_open, prctl(2)
PR_SET_NO_NEW_PRIVS and PR_SET_PDEATHSIG, close_range(2) with a /proc/self/fd fallback, and
through runtime.security.capabilities capset(2) and the uid/gid switch.

``harden`` runs these steps, in this order (runc standard_init_linux.go and init_linux.go
finalizeNamespace):

1. rlimits. Raising a hard limit needs CAP_SYS_RESOURCE in the *initial* user namespace, so in
   a container with its own user namespace set them before unshare(CLONE_NEWUSER), or from
   the parent with ``set_rlimits(..., pid=child)``, and pass ``rlimits=()`` here.
2. PR_SET_NO_NEW_PRIVS: execve can no longer grant privileges (setuid bits, file
   capabilities); it is inherited by every descendant and cannot be unset.
3. Close every fd >= 3 but the keep-list (CVE-2024-21626: a leaked host directory fd let a
   container escape), first thing in runc's finalizeNamespace too, so that nothing the
   later steps do can be reached through a leaked fd.
4. Capabilities and the user switch (``capabilities.apply``).
5. PR_SET_PDEATHSIG again: a credential change clears it (kernel/cred.c commit_creds), and
   then getppid() is compared with the expected parent: a different parent means the real
   one died before the signal was armed.

Seccomp (runtime.security.seccomp) is loaded after these, as close to execve as possible.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime import syscalls
from runtime.security import capabilities
from runtime.security.capabilities import CapabilitySets, User

# getrlimit(2) resources as OCI process.rlimits[].type spells them, numbered as in
# <asm-generic/resource.h> (x86_64 uses the generic numbers; Python lacks RLIMIT_LOCKS).
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}  # fmt: skip

UNLIMITED = 2**64 - 1  # RLIM_INFINITY as OCI's uint64 spells it; -1 is accepted for it too
DEFAULT_NOFILE = 1048576  # containerd's and docker's default for RLIMIT_NOFILE, soft and hard
_CAP_SYS_RESOURCE = capabilities.CAP_NUMBER["CAP_SYS_RESOURCE"]


class RlimitError(ValueError):
    """An rlimit that is malformed or that the kernel would refuse; nothing was set."""


class ParentDied(RuntimeError):
    """getppid() is not the expected parent: it died, and the process was reparented."""


@dataclass(frozen=True)
class Rlimit:
    """One resource limit: an OCI name, soft and hard values (UNLIMITED or -1: no limit)."""

    name: str
    soft: int
    hard: int

    def __post_init__(self) -> None:
        if self.name not in RLIMITS:
            raise RlimitError(
                f"unknown rlimit {self.name!r}: allowed are {', '.join(sorted(RLIMITS))}"
            )
        for field in ("soft", "hard"):
            value = getattr(self, field)
            if value == -1:
                object.__setattr__(self, field, UNLIMITED)
            elif not 0 <= value <= UNLIMITED:
                raise RlimitError(f"{self.name} {field} {value}: allowed 0..{UNLIMITED} or -1")
        if self.soft > self.hard:
            raise RlimitError(
                f"{self.name}: soft limit {self.soft} is above hard limit {self.hard}: "
                "the soft limit must not exceed the hard one"
            )


def _to_kernel(value: int) -> int:
    return resource.RLIM_INFINITY if value == UNLIMITED else value


def _from_kernel(value: int) -> int:
    return UNLIMITED if value == resource.RLIM_INFINITY else value


def nr_open(path: str | os.PathLike[str] = "/proc/sys/fs/nr_open") -> int:
    """The kernel's ceiling for RLIMIT_NOFILE: setrlimit above it fails with EPERM."""
    return int(Path(path).read_text())


def can_raise_hard_limits() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE in its effective set."""
    return bool(syscalls.capget()[0] >> _CAP_SYS_RESOURCE & 1)


def default_nofile(
    *, ceiling: int | None = None, hard: int | None = None, can_raise: bool | None = None
) -> Rlimit:
    """Docker's RLIMIT_NOFILE (1048576 soft and hard) clipped to /proc/sys/fs/nr_open and,
    without CAP_SYS_RESOURCE (a restricted host or nested container), to the current hard
    limit, which such a process cannot raise. Defaults are read from the kernel."""
    value = min(DEFAULT_NOFILE, nr_open() if ceiling is None else ceiling)
    if can_raise is None:
        can_raise = can_raise_hard_limits()
    if hard is None:
        hard = _from_kernel(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    if not can_raise:
        value = min(value, hard)
    return Rlimit("RLIMIT_NOFILE", value, value)


def _validated(limits: Iterable[Rlimit | tuple[str, int, int]], pid: int) -> list[Rlimit]:
    items = [item if isinstance(item, Rlimit) else Rlimit(*item) for item in limits]
    names = [item.name for item in items]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RlimitError(f"rlimits given more than once: {duplicated}")
    can_raise = can_raise_hard_limits()
    for item in items:
        if item.name == "RLIMIT_NOFILE" and item.hard > (ceiling := nr_open()):
            raise RlimitError(
                f"RLIMIT_NOFILE hard limit {item.hard} is above /proc/sys/fs/nr_open "
                f"({ceiling}): the kernel refuses it"
            )
        current = _from_kernel(resource.prlimit(pid, RLIMITS[item.name])[1])
        if item.hard > current and not can_raise:
            raise RlimitError(
                f"{item.name} hard limit {item.hard} is above the current {current}: raising "
                "a hard limit needs CAP_SYS_RESOURCE, which this process lacks"
            )
    return items


def set_rlimits(limits: Iterable[Rlimit | tuple[str, int, int]], pid: int = 0) -> None:
    """prlimit(2) each (name, soft, hard) on ``pid`` (0: this process). All are checked
    first, so a bad one sets none."""
    for item in _validated(limits, pid):
        values = (_to_kernel(item.soft), _to_kernel(item.hard))
        try:
            resource.prlimit(pid, RLIMITS[item.name], values)
        except OSError as e:
            raise OSError(e.errno, f"prlimit({pid}, {item.name}, {values}): {e.strerror}") from e


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS 1 (irreversible, inherited across fork and execve)."""
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def no_new_privs() -> bool:
    """PR_GET_NO_NEW_PRIVS of this thread."""
    return syscalls.prctl(syscalls.PR_GET_NO_NEW_PRIVS) == 1


def _close_by_listing(keep: Collection[int], cloexec: bool) -> None:
    # The fd listdir uses for /proc/self/fd is in the listing but closed by the loop's time:
    # EBADF for it (or for any fd closed meanwhile) is not an error.
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
        if fd < 3 or fd in keep:
            continue
        try:
            if cloexec:
                os.set_inheritable(fd, False)
            else:
                os.close(fd)
        except OSError as e:
            if e.errno != errno.EBADF:
                raise


def close_fds(keep: Collection[int] = (), *, cloexec: bool = False) -> None:
    """Close (with ``cloexec``: mark close-on-exec, as runc does) every fd >= 3 not in
    ``keep``, with close_range(2), or by listing /proc/self/fd where the kernel lacks it
    (before 5.9; CLOSE_RANGE_CLOEXEC before 5.11). A kept fd that is not open is refused
    before anything is closed."""
    kept = sorted({fd for fd in keep if fd >= 3})
    for fd in kept:
        try:
            os.fstat(fd)
        except OSError:
            raise ValueError(f"fd {fd} in the keep-list is not open") from None
    flags = syscalls.CLOSE_RANGE_CLOEXEC if cloexec else 0
    try:
        low = 3
        for fd in [*kept, 0xFFFFFFFF + 1]:
            if fd > low:
                syscalls.close_range(low, fd - 1, flags)
            low = fd + 1
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        _close_by_listing(set(kept), cloexec)


def set_parent_death_signal(sig: int, expected_ppid: int | None = None) -> None:
    """PR_SET_PDEATHSIG ``sig`` (0: none), then, if ``expected_ppid`` is given, raise
    ParentDied when getppid() differs: the parent died before the signal was armed, so it
    will never come. Checking after arming leaves no window."""
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, sig)
    if expected_ppid is not None and (ppid := os.getppid()) != expected_ppid:
        raise ParentDied(f"parent {expected_ppid} died: the process now has parent {ppid}")


def parent_death_signal() -> int:
    """PR_GET_PDEATHSIG of this thread (0: none)."""
    return syscalls.prctl_get_int(syscalls.PR_GET_PDEATHSIG)


def harden(
    sets: CapabilitySets,
    user: User,
    *,
    keep_fds: Collection[int] = (),
    rlimits: Iterable[Rlimit | tuple[str, int, int]] | None = None,
    no_new_privs: bool = True,
    death_signal: int = signal.SIGKILL,
    expected_ppid: int | None = None,
) -> None:
    """Steps 1-5 of the module docstring, in a single-threaded process. ``rlimits`` None
    means ``default_nofile()``; pass () when they were set before entering a user
    namespace. ``death_signal`` defaults to SIGKILL: the container's process must not
    outlive the shim that holds its logs and exit status."""
    set_rlimits([default_nofile()] if rlimits is None else rlimits)
    if no_new_privs:
        set_no_new_privs()
    close_fds(keep_fds)
    capabilities.apply(sets, user)
    set_parent_death_signal(death_signal, expected_ppid)
