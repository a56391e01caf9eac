"""pids_guard: pids.max = pids.current + headroom, within [min, max].

pids.max makes fork(2) fail with EAGAIN and pids.events ``max`` counts each refusal (in this
cgroup or below). A rising ``max`` count is a fork storm hitting the limit: it is reported
and the limit is held (not raised) for ``hold``, or the guard would just follow the storm.
Hysteresis keeps writes rare: raise when less than half the headroom is left, lower when more
than twice the headroom is unused; never twice within ``cooldown``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from enforce.actions import AuditEntry, Outcome
from enforce.controllers import Decision, Target, now_of, sample_of
from enforce.policy.schema import PidsGuardParams
from monitor.snapshot import Snapshot
from runtime.cgroupfs.formats import MAX, IntOrMax


@dataclass(frozen=True, slots=True)
class State:
    refused: int | None = None  # pids.events max at the last tick
    storm_until: float = 0.0  # monotonic s until which the limit is held
    last_change: float | None = None


def desired(params: PidsGuardParams, current: int) -> int:
    return max(params.min, min(params.max, current + params.headroom))


def decide(
    params: PidsGuardParams,
    target: Target,
    cgroup: str,
    history: Sequence[Snapshot],
    state: State | None,
) -> Decision[State]:
    state = state or State()
    sample = sample_of(history, cgroup)
    if sample is None or sample.pids_current is None or sample.limits.pids_max is None:
        return Decision(state)  # no pids controller here
    now = now_of(history)
    current, limit = sample.pids_current, sample.limits.pids_max
    refused = sample.pids_events.max if sample.pids_events is not None else None
    notes: tuple[str, ...] = ()
    if refused is not None and state.refused is not None and refused > state.refused:
        n = refused - state.refused
        notes = (f"{cgroup}: fork storm: {n} forks refused at pids.max {limit}, holding it",)
        state = replace(state, storm_until=now + params.hold)
    state = replace(state, refused=refused)
    want = desired(params, current)
    new = _change(params, current, limit, want)
    if new is None:
        return Decision(state, notes=notes)
    raising = limit is MAX or new > limit
    if raising and now < state.storm_until and limit is not MAX and limit >= params.min:
        return Decision(state, notes=notes)
    if state.last_change is not None and now - state.last_change < params.cooldown:
        return Decision(state, notes=notes)
    why = f"pids.current {current} + headroom {params.headroom} -> pids.max {new}"
    inputs: dict[str, float | int | str] = {"pids_current": current, "refused": refused or 0}
    action = target.action(cgroup, "pids.max", limit, new, why, inputs)
    return Decision(replace(state, last_change=now), (action,), notes)


def _change(params: PidsGuardParams, current: int, limit: IntOrMax, want: int) -> int | None:
    """The new pids.max, or None when the present one is close enough."""
    if limit is MAX or limit < params.min or limit > params.max:
        return want
    if limit - current < params.headroom / 2 and want > limit:
        return want
    if limit - current > 2 * params.headroom and want < limit:
        return want
    return None


def observe(state: State, entry: AuditEntry) -> State | None:
    """pids.max is re-read every tick, so an external change needs no reset: the cooldown,
    which runs from the decision, is the back-off. A FAILED write may be retried at once."""
    if entry.file == "pids.max" and entry.outcome is Outcome.FAILED:
        return replace(state, last_change=None)
    return state
