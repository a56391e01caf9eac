"""cpu_quota: cpu.max follows demand within [min, max] cores.

A tick is "starved" when the throttled ratio (cpu.stat nr_throttled / nr_periods over the
tick; it counts this cgroup's own cpu.max only) is above ``target_throttled``, and "idle"
when usage is below ``idle_below`` of the quota. After ``raise_after`` starved ticks in a
row the quota rises by ``step_up`` of itself toward ``max``; after ``lower_after`` idle
ticks it falls toward the ``percentile`` of usage over ``window`` plus ``margin``, by at
most ``step_down`` of itself. No change within ``cooldown`` of the last applied one, and an
external change to cpu.max restarts the counts and the cooldown.

Additions, off unless the params enable them: ``raise_to_demand`` raises a starved quota to
the demand estimated from cpu.pressure plus ``margin`` in one write. Throttled tasks stay
runnable, so the cgroup's cpu.pressure ``some`` counts the time they wait for the next
period: demand ~ usage / (1 - some). (Contention with other cgroups shows there too, which
only overestimates; ``max`` bounds it.) ``raise_cooldown`` lets a starved quota rise sooner
than ``cooldown`` allows a lowering. ``lower_from_idle`` takes the percentile over the
current idle streak only: once a spike ends, its usage no longer holds the quota up for a
whole ``window``. ``min_step`` is the dead band of a lowering (fewer, larger steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from enforce.actions import AuditEntry, Outcome
from enforce.controllers import Decision, Target, model_of, now_of, sample_of, window
from enforce.policy.schema import CpuQuotaParams
from monitor.snapshot import Snapshot
from runtime.cgroupfs.cpu import QUOTA_MIN_US, CpuMax, parse_cpu_max
from runtime.cgroupfs.limit_syntax import format_cpus


@dataclass(frozen=True, slots=True)
class State:
    starved: int = 0  # consecutive starved ticks
    idle: int = 0  # consecutive idle ticks
    last_change: float | None = None  # monotonic s of the last change (cooldown)
    expected: CpuMax | None = None  # cpu.max as last APPLIED (None: not checked)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def quota_of(cores: float, period: int) -> CpuMax:
    return CpuMax(max(QUOTA_MIN_US, round(cores * period)), period)


def decide(
    params: CpuQuotaParams,
    target: Target,
    cgroup: str,
    history: Sequence[Snapshot],
    state: State | None,
) -> Decision[State]:
    state = state or State()
    sample, model = sample_of(history, cgroup), model_of(history, cgroup)
    if sample is None or model is None or sample.limits.cpu_max is None:
        return Decision(state)  # no cpu controller here
    now = now_of(history)
    cur = sample.limits.cpu_max
    if state.expected is not None and cur != state.expected:
        # Someone else set cpu.max: take theirs as the new start and wait a cooldown.
        return Decision(State(last_change=now), notes=(f"{cgroup}: cpu.max changed to {cur}",))
    cores = cur.cores
    if cores is None or not params.min <= cores <= params.max:
        # Unlimited or out of bounds: bring it inside first.
        bound = params.max if cores is None or cores > params.max else params.min
        new = quota_of(bound, params.period_us)
        why = f"cpu.max {format_cpus(cur)} outside [{params.min:g}, {params.max:g}] cores"
        action = target.action(cgroup, "cpu.max", cur, new, why, {"bound_cores": bound})
        return Decision(replace(state, starved=0, idle=0, last_change=now), (action,))
    throttled, used = model.throttled_ratio, model.cpu_cores
    if throttled is None or used is None:
        return Decision(state)
    starved = state.starved + 1 if throttled > params.target_throttled else 0
    idle = state.idle + 1 if used < params.idle_below * cores else 0
    state = replace(state, starved=starved, idle=idle)
    raising = starved >= params.raise_after and cores < params.max
    wait = params.cooldown
    if raising and params.raise_cooldown is not None:
        wait = params.raise_cooldown
    if state.last_change is not None and now - state.last_change < wait:
        return Decision(state)
    inputs: dict[str, float | int | str] = {
        "throttled_ratio": round(throttled, 4),
        "cpu_cores": round(used, 4),
        "quota_cores": cores,
    }
    if raising:
        new_cores = min(cores * (1 + params.step_up), params.max)
        why = f"throttled {throttled:.0%} > {params.target_throttled:.0%} for {starved} ticks"
        demand = demand_of(used, model.pressure_cpu_some) if params.raise_to_demand else None
        if demand is not None and demand * (1 + params.margin) > new_cores:
            new_cores = min(demand * (1 + params.margin), params.max)
            inputs["demand_cores"] = round(demand, 4)
            why += f": demand ~{demand:.2f} cores (cpu.pressure) + {params.margin:.0%}"
    elif idle >= params.lower_after:
        usage = _usage(history, cgroup, params.window)
        if params.lower_from_idle:
            usage = usage[-idle:]  # the idle streak: a finished spike no longer counts
        goal = percentile(usage, params.percentile) * (1 + params.margin)
        new_cores = max(goal, cores * (1 - params.step_down), params.min)
        inputs["usage_percentile"] = round(goal / (1 + params.margin), 4)
        why = f"idle for {idle} ticks: p{params.percentile:g} usage + {params.margin:.0%} margin"
        if new_cores >= cores * (1 - params.min_step):  # dead band: not worth a write
            return Decision(replace(state, idle=0))
    else:
        return Decision(state)
    new = quota_of(new_cores, cur.period)
    if new == cur:
        return Decision(state)
    action = target.action(cgroup, "cpu.max", cur, new, f"{why} -> {format_cpus(new)}", inputs)
    return Decision(replace(state, starved=0, idle=0, last_change=now, expected=None), (action,))


def demand_of(used: float, some: float | None, most: float = 0.95) -> float | None:
    """CPU demand (cores) from usage and the share of time tasks waited runnable (cpu.pressure
    ``some``): usage / (1 - some), the share capped at ``most`` (a 20x estimate at most)."""
    if some is None or some <= 0:
        return None
    return used / (1 - min(some, most))


def _usage(history: Sequence[Snapshot], cgroup: str, seconds: float) -> list[float]:
    """cpu_cores of every snapshot of the last ``seconds`` that has a rate."""
    out = []
    for snap in window(history, seconds):
        model = snap.models.get(cgroup)
        if model is not None and model.cpu_cores is not None:
            out.append(model.cpu_cores)
    return out


def observe(state: State, entry: AuditEntry) -> State | None:
    """APPLIED arms the drift check (the cooldown runs from the decision, so a dry run keeps
    the live run's timing); SKIPPED backs off: counts restart and the cooldown runs again;
    other outcomes leave no expectation on the kernel file."""
    if entry.file != "cpu.max":
        return state
    if entry.outcome is Outcome.APPLIED:
        return replace(state, expected=parse_cpu_max(entry.new, "audit cpu.max"))
    if entry.outcome is Outcome.SKIPPED:
        return State(last_change=state.last_change)
    return replace(state, expected=None)
