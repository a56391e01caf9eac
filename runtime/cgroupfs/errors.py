"""Errors raised by runtime.cgroupfs. Each one names the path, value or field that was wrong."""

from __future__ import annotations


class CgroupError(Exception):
    """Base class: something about a cgroup file or value was wrong."""


class CgroupGone(CgroupError):
    """The cgroup vanished (ENOENT/ENODEV mid-read): a normal event, not a failure."""

    def __init__(self, cgroup: str) -> None:
        super().__init__(f"cgroup {cgroup or '/'} is gone")
        self.cgroup = cgroup


class NotCgroup2(CgroupError):
    """The root given to CgroupFS is not a cgroup2 mount."""


class InvalidPath(CgroupError, ValueError):
    """A cgroup path that escapes the root, or a name the kernel cannot hold."""


class ParseError(CgroupError, ValueError):
    """A kernel file's text did not have the format the kernel documents."""

    def __init__(self, source: str, line: str, allowed: str) -> None:
        super().__init__(f"{source}: cannot parse {line!r}: expected {allowed}")
        self.source = source
        self.line = line


class InvalidLimit(CgroupError, ValueError):
    """A limit value rejected before anything was written."""

    def __init__(self, what: str, value: object, allowed: str) -> None:
        super().__init__(f"{what}: invalid value {value!r}: {allowed}")
        self.what = what
        self.value = value
        self.allowed = allowed


class WriteRejected(CgroupError, OSError):
    """The kernel refused a write (EINVAL, EBUSY, ...): names the file and the value."""

    def __init__(self, path: str, value: str, errno_: int, reason: str) -> None:
        CgroupError.__init__(self, f"{path}: kernel refused {value!r}: {reason}")
        self.path = path
        self.value = value
        self.errno = errno_


class ControllerUnavailable(CgroupError):
    """A controller the operation needs is not offered to this cgroup."""

    def __init__(
        self, cgroup: str, controllers: list[str], available: set[str], detail: str = ""
    ) -> None:
        have = " ".join(sorted(available)) or "none"
        super().__init__(
            f"cgroup {cgroup or '/'}: controller(s) {' '.join(controllers)} not available "
            f"(cgroup.controllers offers: {have})" + (f"; {detail}" if detail else "")
        )
        self.cgroup = cgroup
        self.controllers = controllers
