"""PSI triggers: be woken when a cgroup's pressure stall grows fast (accounting/psi.rst).

Writing "some 150000 1000000" to a cgroup's ``memory.pressure`` (opened O_RDWR) asks the
kernel to signal POLLPRI on that fd whenever the ``some`` stall time grows by 150 ms within
any 1 s window. One trigger per open fd (a second write fails EBUSY). The kernel checks the
window against 500 ms..10 s and needs threshold <= window; a process without
CAP_SYS_RESOURCE may only use windows that are multiples of 2 s (EINVAL otherwise; seen on
6.18 here, where the same trigger with a 2 s window is accepted). With PSI disabled (psi=0)
the write fails EOPNOTSUPP; where triggers are not permitted at all, EPERM.

poll(2) on a trigger fd reports POLLPRI once per firing (reading the event clears it), and
POLLERR|POLLPRI when the fd holds no trigger any more: the cgroup was removed, after which
every operation on the fd fails ENODEV.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.cgroupfs.errors import CgroupError, CgroupGone, InvalidLimit
from runtime.cgroupfs.fs import CgroupFS, normalize
from runtime.cgroupfs.pressure import RESOURCES

WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10_000_000
UNPRIVILEGED_WINDOW_US = 2_000_000  # without CAP_SYS_RESOURCE: multiples of this only
LINES = ("some", "full")

Key = tuple[str, str]  # (cgroup, resource)


class TriggerUnavailable(CgroupError):
    """The kernel would not arm a trigger (PSI disabled, not permitted): names why."""


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """``line`` stall time growing by ``threshold_us`` within ``window_us``."""

    line: str
    threshold_us: int
    window_us: int

    def __post_init__(self) -> None:
        if self.line not in LINES:
            raise InvalidLimit("psi trigger line", self.line, "'some' or 'full'")
        if not WINDOW_MIN_US <= self.window_us <= WINDOW_MAX_US:
            allowed = f"microseconds {WINDOW_MIN_US}..{WINDOW_MAX_US} (500 ms..10 s)"
            raise InvalidLimit("psi trigger window", self.window_us, allowed)
        if not 0 < self.threshold_us <= self.window_us:
            allowed = f"microseconds 1..{self.window_us} (at most the window)"
            raise InvalidLimit("psi trigger threshold", self.threshold_us, allowed)

    @classmethod
    def parse(cls, text: str) -> TriggerSpec:
        """ "some 150000 1000000" -> TriggerSpec("some", 150000, 1000000)."""
        words = text.split()
        if len(words) != 3 or not words[1].isdigit() or not words[2].isdigit():
            raise InvalidLimit(
                "psi trigger",
                text,
                "'some|full THRESHOLD_US WINDOW_US', e.g. 'some 150000 1000000'",
            )
        return cls(words[0], int(words[1]), int(words[2]))

    def __str__(self) -> str:
        return f"{self.line} {self.threshold_us} {self.window_us}"


class PsiTrigger:
    """One armed trigger: an fd on ``cgroup``'s ``resource``.pressure. Close it to disarm."""

    def __init__(self, fs: CgroupFS, cgroup: str, resource: str, spec: TriggerSpec) -> None:
        if resource not in RESOURCES:
            raise InvalidLimit("psi trigger resource", resource, f"one of {', '.join(RESOURCES)}")
        self.cgroup = normalize(cgroup)
        self.resource = resource
        self.spec = spec
        path = fs.path(self.cgroup) / f"{resource}.pressure"
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV):
                raise CgroupGone(self.cgroup) from None
            raise CgroupError(f"{path}: cannot open for a trigger: {e.strerror}") from e
        try:
            os.write(self.fd, str(spec).encode())
        except OSError as e:
            os.close(self.fd)
            raise _write_error(path, self.cgroup, spec, e) from None

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __repr__(self) -> str:
        return f"PsiTrigger({self.cgroup or '/'!r}, {self.resource!r}, {str(self.spec)!r})"


def _write_error(path: object, cgroup: str, spec: TriggerSpec, e: OSError) -> CgroupError:
    if e.errno == errno.ENODEV:
        return CgroupGone(cgroup)
    if e.errno == errno.EOPNOTSUPP:
        return TriggerUnavailable(f"{path}: PSI is disabled on this kernel (boot with psi=1)")
    if e.errno == errno.EPERM:
        return TriggerUnavailable(f"{path}: not permitted to arm a PSI trigger")
    if e.errno == errno.EINVAL and spec.window_us % UNPRIVILEGED_WINDOW_US:
        return TriggerUnavailable(
            f"{path}: kernel refused trigger {str(spec)!r}: without CAP_SYS_RESOURCE the "
            f"window must be a multiple of {UNPRIVILEGED_WINDOW_US} us"
        )
    return TriggerUnavailable(f"{path}: kernel refused trigger {str(spec)!r}: {e.strerror}")


@dataclass(frozen=True, slots=True)
class Wakeup:
    """What one ``TriggerSet.wait`` saw: triggers that fired, cgroups that went away."""

    fired: tuple[Key, ...]
    gone: tuple[Key, ...]


class TriggerSet:
    """Many triggers, waited on together with one poll(2). ``wake()`` (from any thread)
    ends a ``wait`` at once, through a pipe polled with the triggers."""

    def __init__(self, fs: CgroupFS) -> None:
        self.fs = fs
        self._triggers: dict[Key, PsiTrigger] = {}
        self._by_fd: dict[int, Key] = {}
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._wake_r, select.POLLIN)

    def __len__(self) -> int:
        return len(self._triggers)

    def __contains__(self, key: object) -> bool:
        return key in self._triggers

    def keys(self) -> list[Key]:
        return list(self._triggers)

    def arm(self, cgroup: str, resource: str, spec: TriggerSpec | str) -> bool:
        """Arm a trigger on (cgroup, resource), replacing one with another spec. False when
        the same one was armed already. Raises CgroupGone or TriggerUnavailable."""
        spec = spec if isinstance(spec, TriggerSpec) else TriggerSpec.parse(spec)
        key = (normalize(cgroup), resource)
        old = self._triggers.get(key)
        if old is not None:
            if old.spec == spec:
                return False
            self.disarm(key)
        trigger = PsiTrigger(self.fs, cgroup, resource, spec)
        self._triggers[key] = trigger
        self._by_fd[trigger.fd] = key
        self._poll.register(trigger.fd, select.POLLPRI)
        return True

    def disarm(self, key: Key) -> None:
        trigger = self._triggers.pop(key, None)
        if trigger is not None:
            self._poll.unregister(trigger.fd)
            del self._by_fd[trigger.fd]
            trigger.close()

    def keep_only(self, keys: Iterable[Key]) -> None:
        """Disarm every trigger whose key is not in ``keys``."""
        wanted = set(keys)
        for key in [k for k in self._triggers if k not in wanted]:
            self.disarm(key)

    def wait(self, timeout: float) -> Wakeup:
        """Block up to ``timeout`` seconds until a trigger fires, a cgroup goes or ``wake``
        is called; the triggers of vanished cgroups are disarmed."""
        events = self._poll.poll(max(math.ceil(timeout * 1000), 0))
        fired: list[Key] = []
        gone: list[Key] = []
        for fd, mask in events:
            if fd == self._wake_r:
                self._drain_wake()
                continue
            key = self._by_fd[fd]
            if mask & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
                gone.append(key)
            elif mask & select.POLLPRI:
                fired.append(key)
        for key in gone:
            self.disarm(key)
        return Wakeup(tuple(fired), tuple(gone))

    def wake(self) -> None:
        """End the current (or the next) ``wait`` now."""
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_w, b"w")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def close(self) -> None:
        for key in list(self._triggers):
            self.disarm(key)
        if self._wake_r >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def __enter__(self) -> TriggerSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
