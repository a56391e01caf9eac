"""io_pressure: protect cgroups from io contention by capping lower-priority ones.

The rule's selector picks the lower-priority cgroups; ``protect`` globs pick the protected
ones. While the highest io.pressure ``some`` ratio among the protected cgroups (stall time
over wall time, from the ``total`` counters) is above ``target``, the selected cgroups'
io.max lines on ``devices`` are capped to the given rates (a cap never loosens a tighter
existing one). Once the pressure stays below ``restore_below`` for ``hold``, each capped
line is restored to what it was before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

from enforce.actions import Action, AuditEntry, IoLimit
from enforce.controllers import Decision, Target, io_limit_of, model_of, now_of, sample_of
from enforce.policy.schema import IoPressureParams
from monitor.snapshot import Snapshot
from runtime.cgroupfs.formats import MAX, IntOrMax
from runtime.cgroupfs.io import Device, IoMax


@dataclass(frozen=True, slots=True)
class State:
    """``capped``: (cgroup, device) -> the io.max line before the cap, to restore."""

    capped: Mapping[tuple[str, Device], IoLimit] = field(default_factory=dict)
    below_since: float | None = None


def protected(params: IoPressureParams, snapshot: Snapshot) -> list[str]:
    return sorted(
        p for p in snapshot.sample.cgroups if any(fnmatchcase(p, g) for g in params.protect)
    )


def _tighter(a: IntOrMax, b: IntOrMax) -> IntOrMax:
    if a is MAX:
        return b
    if b is MAX:
        return a
    return min(a, b)


def capped(params: IoPressureParams, old: IoMax) -> IoMax:
    return IoMax(
        rbps=_tighter(old.rbps, params.rbps),
        wbps=_tighter(old.wbps, params.wbps),
        riops=_tighter(old.riops, params.riops),
        wiops=_tighter(old.wiops, params.wiops),
    )


def decide(
    params: IoPressureParams,
    target: Target,
    cgroups: Sequence[str],
    history: Sequence[Snapshot],
    state: State | None,
) -> Decision[State]:
    state = state or State()
    guarded = protected(params, history[-1])
    ratios = [
        (m.pressure_io_some, p)
        for p in guarded
        if (m := model_of(history, p)) is not None and m.pressure_io_some is not None
    ]
    if not ratios:
        return Decision(state)
    worst, who = max(ratios)
    now = now_of(history)
    inputs: dict[str, float | int | str] = {"io_some": round(worst, 4), "protected": who}
    if worst > params.target:
        lower = [c for c in cgroups if c not in guarded]
        return _cap(params, target, lower, history, replace(state, below_since=None), inputs)
    if not state.capped or worst >= params.restore_below:
        return Decision(replace(state, below_since=None))
    if state.below_since is None:
        return Decision(replace(state, below_since=now))
    if now - state.below_since < params.hold:
        return Decision(state)
    actions: list[Action] = []
    for (cgroup, device), before in sorted(state.capped.items(), key=lambda kv: kv[0]):
        sample = sample_of(history, cgroup)
        if sample is None:
            continue
        now_line = io_limit_of(sample, device)
        why = f"{who} io pressure {worst:.1%} below {params.restore_below:.0%}: restore"
        actions.append(target.action(cgroup, "io.max", now_line, before, why, inputs))
    return Decision(State(), tuple(actions))


def _cap(
    params: IoPressureParams,
    target: Target,
    cgroups: Sequence[str],
    history: Sequence[Snapshot],
    state: State,
    inputs: dict[str, float | int | str],
) -> Decision[State]:
    actions: list[Action] = []
    saved = dict(state.capped)
    for cgroup in cgroups:
        sample = sample_of(history, cgroup)
        if sample is None or sample.limits.io_max is None:
            continue  # no io controller here
        for dev in params.devices:
            device = Device.parse(dev)
            old = io_limit_of(sample, device)
            new = IoLimit(device, capped(params, old.limit))
            if new == old:
                continue
            saved.setdefault((cgroup, device), old)
            why = f"{inputs['protected']} io pressure {inputs['io_some']:.1%} above target"
            actions.append(target.action(cgroup, "io.max", old, new, why, inputs))
    return Decision(replace(state, capped=saved), tuple(actions))


def observe(state: State, entry: AuditEntry) -> State | None:
    """Every line is re-read from the snapshot each tick, so no outcome needs a reset."""
    return state


def triggers(params: IoPressureParams, snapshot: Snapshot) -> list[tuple[str, str, str]]:
    """A trigger per protected cgroup firing when ``some`` stall in the window passes the
    target ratio."""
    window_us = round(params.trigger_window * 1e6)
    threshold = max(1, round(params.target * window_us))
    return [(p, "io", f"some {threshold} {window_us}") for p in protected(params, snapshot)]
