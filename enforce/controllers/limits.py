"""limits: static limit files (memory.{max,high,low,min}, cpu.max, cpu.weight, io.max,
pids.max) held at the policy's values.

Whenever a file differs from its value it is written again. A difference in a file this
controller already set (its write was APPLIED) is drift - something else changed it - and
the reason says so, naming the value found, so the audit log shows who fights whom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from enforce.actions import Action, AuditEntry, IoLimit, Outcome, Value, format_value
from enforce.controllers import Decision, Target, file_value, io_limit_of, sample_of
from enforce.policy.schema import LimitsParams
from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot

# policy key -> kernel file
FILES = {
    "memory_min": "memory.min",
    "memory_low": "memory.low",
    "memory_high": "memory.high",
    "memory_max": "memory.max",
    "cpu_max": "cpu.max",
    "cpu_weight": "cpu.weight",
    "pids_max": "pids.max",
}


@dataclass(frozen=True, slots=True)
class State:
    """Files (and io.max devices, as "io.max MAJ:MIN") whose value this rule has written."""

    applied: frozenset[str] = frozenset()
    drifts: int = 0


def wanted(
    params: LimitsParams, sample: CgroupSample
) -> list[tuple[str, str, Value | None, Value]]:
    """(key, file, value now, value wanted) for every limit the params set."""
    out: list[tuple[str, str, Value | None, Value]] = []
    for key, file in FILES.items():
        value = getattr(params, key)
        if value is not None:
            out.append((file, file, file_value(sample, file), value))
    for limit in params.io_max or ():
        now: IoLimit | None = (
            io_limit_of(sample, limit.device) if sample.limits.io_max is not None else None
        )
        out.append((f"io.max {limit.device}", "io.max", now, limit))
    return out


def decide(
    params: LimitsParams,
    target: Target,
    cgroup: str,
    history: Sequence[Snapshot],
    state: State | None,
) -> Decision[State]:
    """Write every file whose value differs from the policy's (None read = not available on
    this cgroup: the controller is not enabled, nothing to write to)."""
    state = state or State()
    sample = sample_of(history, cgroup)
    if sample is None:
        return Decision(state)
    actions: list[Action] = []
    drifts = state.drifts
    for key, file, now, value in wanted(params, sample):
        if now is None or now == value:
            continue
        if key in state.applied:
            drifts += 1
            reason = (
                f"drift: {file} was changed to {format_value(now)} by someone else; "
                f"re-applying {format_value(value)}"
            )
        else:
            reason = f"static limit {file} = {format_value(value)}"
        actions.append(target.action(cgroup, file, now, value, reason, {"drifts": drifts}))
    return Decision(replace(state, drifts=drifts), tuple(actions))


def observe(state: State, entry: AuditEntry) -> State:
    """An APPLIED write makes later differences count as drift."""
    if entry.outcome is not Outcome.APPLIED:
        return state
    key = entry.file
    if entry.file == "io.max":
        key = f"io.max {entry.new.split()[0]}"
    return replace(state, applied=state.applied | {key})
