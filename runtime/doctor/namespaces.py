"""The eight namespaces, each really created in a throwaway child, and user-namespace limits.

A namespace can be compiled in and still refused: by seccomp (container runtimes deny
unshare), by sysctls (user.max_*_namespaces=0), by LSMs, or for lack of CAP_SYS_ADMIN. Only
trying tells, so each probe forks a child that calls unshare(2) and exits with 0 or errno.
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runtime import syscalls
from runtime.cgroupfs.formats import is_digits

_UNEXPECTED = 255  # the child's exit status when something other than unshare failed


@dataclass(frozen=True)
class NsResult:
    """``ok`` with ``error`` None, or the errno name (or "timed out") of the failed try.

    ``with_userns``: the namespace could only be created together with a new user namespace
    (an unprivileged user: the user namespace grants CAP_SYS_ADMIN over the others).
    """

    ok: bool
    error: str | None = None
    with_userns: bool = False


@dataclass(frozen=True)
class UsernsLimits:
    """Knobs that limit user namespaces; None where this kernel lacks the file."""

    max_user_namespaces: int | None  # /proc/sys/user/max_user_namespaces (0: disabled)
    unprivileged_userns_clone: int | None  # Debian/Ubuntu patch: 0 forbids non-root users
    apparmor_restrict: int | None  # Ubuntu 23.10+: 1 forbids unconfined non-root users
    user: str
    subuid: tuple[tuple[int, int], ...]  # (first id, count) ranges from /etc/subuid
    subgid: tuple[tuple[int, int], ...]


def try_unshare(flags: int, timeout: float = 2.0) -> str | None:
    """Fork a child that calls unshare(``flags``); None on success, else the errno name.

    The child is a fresh single-threaded process whatever the parent is, which is what
    unshare(CLONE_NEWUSER) demands (EINVAL when the caller has other threads). It only calls
    unshare and _exit, so it runs no Python cleanup and flushes no inherited buffers.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = _UNEXPECTED
        try:
            syscalls.unshare(flags)
            code = 0
        except OSError as e:
            code = e.errno if e.errno and e.errno < _UNEXPECTED else _UNEXPECTED
        finally:
            os._exit(code)
    return _wait_child(pid, timeout)


def _wait_child(pid: int, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"timed out after {timeout:g}s"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    code = os.WEXITSTATUS(status)
    if code == 0:
        return None
    return "unexpected failure" if code == _UNEXPECTED else syscalls.errno_name(code)


def probe_namespace(name: str, timeout: float = 2.0) -> NsResult:
    """Try the namespace alone; if that is refused EPERM, try it inside a new user namespace
    (how an unprivileged user gets one)."""
    flag = syscalls.NAMESPACE_FLAGS[name]
    error = try_unshare(flag, timeout)
    if error is None:
        return NsResult(ok=True)
    retry = error == "EPERM" and flag != syscalls.CLONE_NEWUSER
    if retry and try_unshare(flag | syscalls.CLONE_NEWUSER, timeout) is None:
        return NsResult(ok=True, with_userns=True)
    return NsResult(ok=False, error=error)


def probe_namespaces(timeout: float = 2.0) -> dict[str, NsResult]:
    """All eight, in /proc/PID/ns order of NAMESPACE_FLAGS (user first)."""
    return {name: probe_namespace(name, timeout) for name in syscalls.NAMESPACE_FLAGS}


def parse_subid(text: str, user: str, uid: int) -> tuple[tuple[int, int], ...]:
    """The ranges of /etc/subuid or /etc/subgid ("NAME_OR_ID:FIRST:COUNT") for one user."""
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or line.lstrip().startswith("#"):
            continue
        owner, first, count = parts
        if owner in (user, str(uid)) and is_digits(first) and is_digits(count):
            ranges.append((int(first), int(count)))
    return tuple(ranges)


def read_userns_limits(
    proc_sys: str = "/proc/sys", etc: str = "/etc", uid: int | None = None
) -> UsernsLimits:
    """user/max_user_namespaces, kernel/unprivileged_userns_clone,
    kernel/apparmor_restrict_unprivileged_userns, and the user's /etc/subuid, /etc/subgid."""
    uid = os.geteuid() if uid is None else uid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return UsernsLimits(
        max_user_namespaces=_read_int(f"{proc_sys}/user/max_user_namespaces"),
        unprivileged_userns_clone=_read_int(f"{proc_sys}/kernel/unprivileged_userns_clone"),
        apparmor_restrict=_read_int(f"{proc_sys}/kernel/apparmor_restrict_unprivileged_userns"),
        user=user,
        subuid=parse_subid(_read_text(f"{etc}/subuid"), user, uid),
        subgid=parse_subid(_read_text(f"{etc}/subgid"), user, uid),
    )


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _read_int(path: str) -> int | None:
    text = _read_text(path).strip()
    return int(text) if is_digits(text.removeprefix("-")) else None
