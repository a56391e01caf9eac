"""The actuator: the one place the enforcer's decisions reach the kernel.

For each Action, in order (the first that applies decides the outcome):

1. mode ``recommend``  -> RECOMMENDED (nothing read or written);
2. a safeguard refuses it (enforce.safeguards.refusal) -> REFUSED, the reason names it;
3. the file no longer holds ``action.old`` (someone else wrote it since the snapshot the
   decision was made from) -> SKIPPED, and the drift is logged; the engine then backs off
   and re-reads, as senpai does on an external change;
4. the global rate limit (``max_writes_per_second``) is spent -> REFUSED;
5. mode ``dry-run`` -> DRY_RUN (nothing written);
6. the write -> APPLIED, or FAILED with the reason (a vanished cgroup, EBUSY, EINVAL...).

Dry-run actions pass through the same checks and spend the same rate budget as live ones,
so a dry run logs the decisions a live run would have applied. Every outcome is audited.
memory.high is written O_NONBLOCK (runtime.cgroupfs.memory): a write below the usage then
returns at once and the kernel reclaims in the cgroup's own tasks, not in the enforcer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from enforce.actions import Action, AuditEntry, IoLimit, Mode, Outcome, Value, format_value
from enforce.audit import AuditLog
from enforce.policy.schema import EnforcerSettings
from enforce.safeguards import refusal
from monitor.snapshot import Snapshot
from runtime.cgroupfs import MAX, CgroupError, CgroupFS, CgroupGone, IntOrMax
from runtime.cgroupfs.core import read_cgroup_events
from runtime.cgroupfs.cpu import (
    CpuMax,
    read_cpu_max,
    read_cpu_weight,
    write_cpu_max,
    write_cpu_weight,
)
from runtime.cgroupfs.io import IoMax, read_io_max, write_io_max
from runtime.cgroupfs.memory import LIMIT_FILES, read_memory_limit, write_memory_limit
from runtime.cgroupfs.pids import read_pids_max, write_pids_max

log = logging.getLogger("corral.enforce")

RATE_LIMITED = "rate limit: more than {rate:g} writes per second (max_writes_per_second)"
RESTORE_RULE = "on_exit"
RESTORE_CONTROLLER = "restore"
T = TypeVar("T")
PAGE = os.sysconf(
    "SC_PAGE_SIZE"
)  # the kernel stores memory.{high,max,low,min} in pages, rounding down


class Actuator:
    """Applies Actions through runtime.cgroupfs and audits each outcome."""

    def __init__(
        self,
        fs: CgroupFS,
        settings: EnforcerSettings,
        audit: AuditLog,
        own_cgroup: str | None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.max_writes_per_second <= 0:
            raise ValueError(
                f"max_writes_per_second {settings.max_writes_per_second!r}: expected > 0"
            )
        self.fs = fs
        self.settings = settings
        self.audit = audit
        self.own_cgroup = own_cgroup
        self._clock = clock
        self._monotonic = monotonic
        # A token bucket: up to one second's worth of writes at once, refilled continuously.
        self._capacity = max(1.0, settings.max_writes_per_second)
        self._tokens = self._capacity
        self._refilled = monotonic()
        self.written: set[tuple[str, str]] = set()  # (cgroup, file) this actuator changed

    def apply(self, actions: Sequence[Action], snapshot: Snapshot) -> list[AuditEntry]:
        """Decide each action's outcome, write what may be written, audit everything."""
        entries = []
        for action in actions:
            outcome, reason = self._outcome(action, snapshot)
            entry = AuditEntry.of(action, outcome, self._clock(), reason)
            self.audit.write(entry)
            entries.append(entry)
        return entries

    def _outcome(self, action: Action, snapshot: Snapshot) -> tuple[Outcome, str]:
        if action.mode is Mode.RECOMMEND:
            return Outcome.RECOMMENDED, ""
        refused = refusal(action, snapshot, self.settings, self.own_cgroup)
        if refused is not None:
            return Outcome.REFUSED, refused
        try:
            drift = self._drift(action)
        except CgroupGone as e:
            return Outcome.FAILED, f"{e}: nothing written"
        except CgroupError as e:
            return Outcome.FAILED, f"cannot re-read {action.file}: {e}"
        if drift is not None:
            log.warning(
                "%s %s changed outside the enforcer: %s (decided against %s); rule %s backs off",
                action.cgroup,
                action.file,
                drift,
                format_value(action.old),
                action.rule,
            )
            return Outcome.SKIPPED, (
                f"{action.file} is {drift}, not {format_value(action.old)} as decided: "
                "changed outside the enforcer; re-read next tick"
            )
        if not self._take_token():
            return Outcome.REFUSED, RATE_LIMITED.format(rate=self.settings.max_writes_per_second)
        if action.mode is Mode.DRY_RUN:
            return Outcome.DRY_RUN, ""
        try:
            write_value(self.fs, action.cgroup, action.file, action.new)
        except CgroupGone as e:
            return Outcome.FAILED, f"{e}: nothing written"
        except (CgroupError, ValueError) as e:
            return Outcome.FAILED, f"write failed: {e}"
        self.written.add((action.cgroup, action.file))
        return Outcome.APPLIED, ""

    def _drift(self, action: Action) -> str | None:
        """The file's current text when it differs from ``action.old``; None when it holds
        what the decision saw (or the decision saw nothing to compare with)."""
        if action.old is None or action.file == "cgroup.kill":
            return None
        current = read_value(self.fs, action.cgroup, action.file, action.old)
        if current is None or same_value(action.file, current, action.old):
            return None
        return format_value(current)

    def _take_token(self) -> bool:
        now = self._monotonic()
        rate = self.settings.max_writes_per_second
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def restore(
        self, originals: Mapping[tuple[str, str], Value | None], snapshot: Snapshot | None = None
    ) -> list[AuditEntry]:
        """on_exit=restore: put back the first value seen of every file this actuator
        changed. Files it never wrote are left alone; with ``snapshot`` each write passes
        the safeguards first (a memory.max below the usage now is refused). Not rate
        limited: the agent is exiting."""
        entries = []
        for (cgroup, file), original in sorted(originals.items()):
            if original is None or (cgroup, file) not in self.written:
                continue
            try:
                current = read_value(self.fs, cgroup, file, original)
            except CgroupGone:
                continue  # nothing left to restore
            except CgroupError:
                current = None  # unreadable now: write the original all the same
            action = Action(
                rule=RESTORE_RULE,
                controller=RESTORE_CONTROLLER,
                cgroup=cgroup,
                file=file,
                old=current,
                new=original,
                mode=Mode.ENFORCE,
                reason="on_exit=restore: the value before the enforcer changed it",
            )
            if current is not None and same_value(file, current, original):
                continue
            outcome, reason = self._restore_one(action, snapshot)
            entry = AuditEntry.of(action, outcome, self._clock(), reason)
            self.audit.write(entry)
            entries.append(entry)
        return entries

    def _restore_one(self, action: Action, snapshot: Snapshot | None) -> tuple[Outcome, str]:
        if snapshot is not None:
            refused = refusal(action, snapshot, self.settings, self.own_cgroup)
            if refused is not None:
                return Outcome.REFUSED, refused
        try:
            write_value(self.fs, action.cgroup, action.file, action.new)
        except (CgroupError, ValueError) as e:
            return Outcome.FAILED, f"write failed: {e}"
        self.written.discard((action.cgroup, action.file))
        return Outcome.APPLIED, ""


def write_value(fs: CgroupFS, cgroup: str, file: str, value: Value) -> None:
    """Write one action's value with the runtime.cgroupfs writer for ``file``."""
    if file in LIMIT_FILES:
        write_memory_limit(fs, cgroup, file, _int_or_max(file, value))
    elif file == "pids.max":
        write_pids_max(fs, cgroup, _int_or_max(file, value))
    elif file == "cpu.max":
        write_cpu_max(fs, cgroup, _typed(file, value, CpuMax))
    elif file == "cpu.weight":
        write_cpu_weight(fs, cgroup, _int(file, value))
    elif file == "io.max":
        limit = _typed(file, value, IoLimit)
        write_io_max(fs, cgroup, {limit.device: limit.limit})
    elif file == "cgroup.freeze":
        (fs.freeze if _typed(file, value, bool) else fs.thaw)(cgroup)
    elif file == "cgroup.kill":
        if value is not True:
            raise ValueError(f"cgroup.kill value {value!r}: only True (kill the subtree)")
        fs.kill(cgroup)
    else:
        raise ValueError(f"{file}: not a file the enforcer writes")


def read_value(fs: CgroupFS, cgroup: str, file: str, like: Value) -> Value | None:
    """The current value of ``file`` as an Action holds it (``like`` picks io.max's device);
    None when the kernel lacks the file. Raises CgroupGone."""
    if file in LIMIT_FILES:
        return read_memory_limit(fs, cgroup, file)
    if file == "pids.max":
        return read_pids_max(fs, cgroup)
    if file == "cpu.max":
        return read_cpu_max(fs, cgroup)
    if file == "cpu.weight":
        return read_cpu_weight(fs, cgroup)
    if file == "io.max" and isinstance(like, IoLimit):
        limits = read_io_max(fs, cgroup)
        # A device with no line in io.max is unlimited: every field MAX.
        return None if limits is None else IoLimit(like.device, limits.get(like.device, IoMax()))
    if file == "cgroup.freeze":
        text = fs.read(cgroup, "cgroup.freeze")
        if text is None:
            events = read_cgroup_events(fs, cgroup)
            return None if events is None else events.frozen
        return text.strip() == "1"
    return None


def same_value(file: str, a: Value, b: Value) -> bool:
    """Equal as the kernel stores them: memory limits in whole pages (a write of 1000000
    reads back as 999424), everything else exactly."""
    if file in LIMIT_FILES and isinstance(a, int) and isinstance(b, int):
        return a // PAGE == b // PAGE
    return a == b


def _int_or_max(file: str, value: Value) -> IntOrMax:
    if value is MAX:
        return MAX
    return _int(file, value)


def _int(file: str, value: Value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{file} value {value!r}: expected an integer")
    return value


def _typed(file: str, value: Value, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise ValueError(f"{file} value {value!r}: expected {kind.__name__}")
    return value
