"""The controllers: pure decisions with explicit state.

Each module has a frozen ``State``, ``decide(...) -> Decision`` (no I/O: history and params
in, new state and actions out) and ``observe(state, entry) -> State | None`` (what became of
an action; None forgets the state, so the next decide re-reads the kernel's value, as senpai
does after an external change). The Engine owns the states and calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from enforce.actions import Action, IoLimit, Mode, Value
from monitor.model import CgroupModel
from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot
from runtime.cgroupfs.io import Device, IoMax

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Target:
    """Who decides: ``rule`` (in ``mode``) running ``controller``."""

    rule: str
    mode: Mode
    controller: str

    def action(
        self,
        cgroup: str,
        file: str,
        old: Value | None,
        new: Value,
        reason: str,
        inputs: dict[str, float | int | str] | None = None,
    ) -> Action:
        return Action(
            rule=self.rule,
            controller=self.controller,
            cgroup=cgroup,
            file=file,
            old=old,
            new=new,
            mode=self.mode,
            reason=reason,
            inputs=inputs or {},
        )


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """A controller's answer: its next state, the writes it wants, and notes worth
    reporting that are not writes (a fork storm)."""

    state: S
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = field(default=())


def now_of(history: Sequence[Snapshot]) -> float:
    """The decision time: the newest snapshot's monotonic clock (seconds)."""
    return history[-1].sample.monotonic


def sample_of(history: Sequence[Snapshot], cgroup: str) -> CgroupSample | None:
    return history[-1].sample.cgroups.get(cgroup)


def model_of(history: Sequence[Snapshot], cgroup: str) -> CgroupModel | None:
    snap = history[-1]
    return snap.models.get(cgroup)


def io_limit_of(sample: CgroupSample, device: Device) -> IoLimit:
    """The device's io.max line as read (a device absent from io.max is unlimited)."""
    table = sample.limits.io_max or {}
    return IoLimit(device, table.get(device, IoMax()))


def file_value(sample: CgroupSample, file: str) -> Value | None:
    """The value of a writable limit file in ``sample`` (None where it was not read)."""
    lim = sample.limits
    values: dict[str, Value | None] = {
        "memory.high": lim.memory_high,
        "memory.max": lim.memory_max,
        "memory.low": lim.memory_low,
        "memory.min": lim.memory_min,
        "memory.swap.max": lim.swap_max,
        "pids.max": lim.pids_max,
        "cpu.max": lim.cpu_max,
        "cpu.weight": lim.cpu_weight,
    }
    if file == "cgroup.freeze":
        return None if sample.events is None else sample.events.frozen
    return values.get(file)


def window(history: Sequence[Snapshot], seconds: float) -> Sequence[Snapshot]:
    """The snapshots of the last ``seconds`` (always at least the newest)."""
    start = now_of(history) - seconds
    out = [s for s in history if s.sample.monotonic >= start]
    return out or [history[-1]]


def fmt_bytes(value: int) -> str:
    for suffix, power in (("G", 3), ("M", 2), ("K", 1)):
        if abs(value) >= 1024**power:
            return f"{value / 1024**power:.1f}{suffix}"
    return str(value)
