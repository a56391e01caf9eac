"""memory_pressure: senpai's law for memory.high (facebookincubator/senpai, senpai.py).

Every tick the memory.pressure ``some`` total's increase is added to an integral of stall
time. When the integral exceeds the target ``pressure`` the limit is raised at once by
``(integral / pressure / coeff_backoff)^2`` (at most ``max_backoff``) of itself; when
``interval`` passes quietly it is lowered by ``(pressure / integral / coeff_probe)^2`` (at
most ``max_probe``). Each adjustment resets the integral and the quiet interval.

Bounds are those of oomd's senpai plugin: the floor is the unreclaimable memory
(memory.current minus the file cache, active_file + inactive_file) plus ``min``, and never
below memory.min; the ceiling is ``max`` (and memory.max when set). memory.high is always a
multiple of 4 KiB. Like senpai, the first tick and any external change to memory.high reset
the limit to memory.current. memory.high throttles and reclaims but never OOM-kills, which is
why the squeeze goes there and not to memory.max.

Three additions, each off unless the params enable it (senpai's sawtooth - probe until a
stall, back off, probe again, forever - writes twice per interval on a steady workload and
takes many intervals to come down after a spike):

- dead band (``min_step``): probes smaller than it accumulate instead of being written, and
  a back-off is at least it: fewer, larger writes around the knee.
- adaptive interval (``interval_growth``): a back-off right after a probe means the probe
  found the knee, so the back-off returns at least to the limit before that probe (known
  quiet for a whole interval) and the next probe waits longer (exponential, capped at
  ``max_interval``). A back-off no probe caused, or the working set (memory.current -
  inactive_file) moving by more than ``reset_change``, means the workload changed: the
  interval returns to ``interval``.
- fast descent (``descent_after``): when memory.current stayed below memory.high for that
  long the limit is not binding at all (the kernel reclaims nothing because of it), so it
  goes straight to the recent peak of memory.current plus ``descent_margin`` rather than
  ``max_probe`` per interval. Writing a memory.high above memory.current reclaims nothing,
  so the descent itself cannot stall the workload; growth afterwards meets the ordinary
  back-off (and the floor, which follows the unreclaimable memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from enforce.actions import Action, AuditEntry, Outcome
from enforce.controllers import Decision, Target, fmt_bytes, now_of, sample_of, window
from enforce.policy.schema import MemoryPressureParams
from monitor.model import working_set
from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot

PAGE_MASK = ~4095


@dataclass(frozen=True, slots=True)
class State:
    """``limit``: memory.high as last decided (bytes); ``integral``: stall (us) since the
    last adjustment; ``confirmed``: that limit was APPLIED, so a different memory.high in
    the kernel is an external change (in dry-run the limit is only virtual)."""

    limit: int
    last_total: int
    integral: int
    last_change: float
    confirmed: bool = False
    wait: float | None = None  # the grown quiet interval (None: params.interval)
    knee: int | None = None  # the limit before the last probe (quiet for an interval)
    probed: bool = False  # the last adjustment was a probe: a back-off now is its answer
    ws_ref: int | None = None  # working set at the last probe, or when the interval grew
    pending: float = 0.0  # probe fractions below min_step, not yet written


def bounds(params: MemoryPressureParams, sample: CgroupSample) -> tuple[int, int]:
    """(floor, ceiling) for memory.high: oomd senpai's getLimitMinBytes/getLimitMaxBytes."""
    current = sample.memory_current or 0
    stat = sample.memory_stat or {}
    file_cache = stat.get("active_file", 0) + stat.get("inactive_file", 0)
    floor = max(current - file_cache, 0) + params.min
    mem_min = sample.limits.memory_min
    if isinstance(mem_min, int):
        floor = max(floor, mem_min)
    ceiling = params.max
    mem_max = sample.limits.memory_max
    if isinstance(mem_max, int):
        ceiling = min(ceiling, mem_max)
    return floor, ceiling


def clamp(value: float, floor: int, ceiling: int) -> int:
    """senpai's import_limit: max(min_size, min(max_size, x)) rounded down to a page."""
    return max(floor, min(ceiling, int(value))) & PAGE_MASK


def decide(
    params: MemoryPressureParams,
    target: Target,
    cgroup: str,
    history: Sequence[Snapshot],
    state: State | None,
) -> Decision[State | None]:
    sample = sample_of(history, cgroup)
    psi = None if sample is None else sample.pressure.get("memory")
    if sample is None or psi is None or sample.memory_current is None:
        return Decision(state)
    if sample.limits.memory_high is None:  # no memory controller here: nothing to write
        return Decision(state)
    decision = _senpai(params, target, cgroup, sample, state, history)
    if params.memory_max_headroom is None or decision.state is None:
        return decision
    raise_max = _headroom(params, target, cgroup, sample, decision.state.limit)
    return replace(decision, actions=decision.actions + raise_max)


def _headroom(
    params: MemoryPressureParams, target: Target, cgroup: str, sample: CgroupSample, high: int
) -> tuple[Action, ...]:
    """memory.max raised (never lowered) to memory.high * (1 + headroom) once it is within
    half the headroom of memory.high: a growing working set meets memory.high's throttling
    and back-offs, not the OOM killer at a hand-set memory.max."""
    headroom = params.memory_max_headroom
    old = sample.limits.memory_max
    if headroom is None or not isinstance(old, int) or old >= high * (1 + headroom / 2):
        return ()
    new = min(int(high * (1 + headroom)), params.max) & PAGE_MASK
    if new <= old:
        return ()
    why = f"memory.high {fmt_bytes(high)} within {headroom / 2:.0%} of memory.max: raise"
    inputs: dict[str, float | int | str] = {"memory_high": high, "headroom": headroom}
    return (target.action(cgroup, "memory.max", old, new, why, inputs),)


def _senpai(
    params: MemoryPressureParams,
    target: Target,
    cgroup: str,
    sample: CgroupSample,
    state: State | None,
    history: Sequence[Snapshot],
) -> Decision[State | None]:
    """senpai.py's tick (the memory.high half of decide), with the optional additions."""
    now = now_of(history)
    high = sample.limits.memory_high
    psi = sample.pressure["memory"]
    total = psi.some.total_usec
    if state is None or (state.confirmed and high != state.limit):
        return _reset(params, target, cgroup, sample, state, now, total)
    delta = max(total - state.last_total, 0)  # a re-created cgroup restarts its counter
    state = replace(state, last_total=total, integral=state.integral + delta)
    state = _moved(params, state, working_set(sample))
    pressure_us = params.pressure * 1e6
    stall = f"stall {state.integral / 1000:.1f} ms vs target {params.pressure * 1000:.1f} ms"
    if state.integral > pressure_us:
        # Back off at once, quadratically in how far the stall overshot the target.
        err = state.integral / pressure_us
        adj = min((err / params.coeff_backoff) ** 2 * params.max_backoff, params.max_backoff)
        return _back_off(params, target, cgroup, sample, state, now, adj, stall)
    descent = _descent(params, target, cgroup, sample, state, history)
    if descent is not None:
        return descent
    if now - state.last_change < (state.wait or params.interval):
        return Decision(state)
    # Quiet for an interval: probe, harder the further the stall stayed below target.
    err = pressure_us / max(state.integral, 1)
    adj = min((err / params.coeff_probe) ** 2 * params.max_probe, params.max_probe)
    if params.min_step > 0 and state.pending + adj < params.min_step:
        # Dead band: a probe this small is not worth a write. It is kept and added to the
        # next one; the interval restarts as after a probe.
        return Decision(replace(state, pending=state.pending + adj, integral=0, last_change=now))
    adj += state.pending
    ws = working_set(sample)
    probing = replace(state, pending=0.0, probed=True, knee=state.limit, ws_ref=ws)
    return _adjust(
        params, target, cgroup, sample, probing, now, -adj, f"probe {-adj:+.2%}: {stall}"
    )


def _max_interval(params: MemoryPressureParams) -> float:
    return params.max_interval if params.max_interval is not None else 8 * params.interval


def _moved(params: MemoryPressureParams, state: State, ws: int | None) -> State:
    """A grown interval returns to the base one when the working set has moved by more than
    ``reset_change`` since it grew: the knee found then no longer holds."""
    if state.ws_ref is None or ws is None:
        return state
    if abs(ws - state.ws_ref) <= params.reset_change * max(state.ws_ref, 1):
        return state
    return replace(state, wait=None, ws_ref=None, knee=None, probed=False)


def _back_off(
    params: MemoryPressureParams,
    target: Target,
    cgroup: str,
    sample: CgroupSample,
    state: State,
    now: float,
    adj: float,
    stall: str,
) -> Decision[State | None]:
    adj = max(adj, params.min_step)  # dead band: never a back-off smaller than a probe step
    why = f"back off {adj:+.2%}: {stall}"
    # The probe's doing only if it came within an interval of it and the working set has
    # not moved since (``_moved`` forgot the knee otherwise): a spike that starts just after
    # a probe is a workload change, not a knee.
    caused = state.probed and now - state.last_change <= params.interval
    if params.interval_growth > 1 and caused and state.knee is not None:
        # The last probe found the knee: go back at least to the limit before it (quiet for
        # a whole interval) and wait longer before probing again.
        wait = min((state.wait or params.interval) * params.interval_growth, _max_interval(params))
        if state.knee > state.limit * (1 + adj):
            adj = state.knee / state.limit - 1
            why = f"back off {adj:+.2%} to the limit before the probe: {stall}"
        why += f"; next probe in {wait:g} s"
        state = replace(state, wait=wait, ws_ref=working_set(sample))
    elif params.interval_growth > 1:
        # No probe caused this stall: the workload grew. Probe at the base interval again.
        state = replace(state, wait=None, ws_ref=None, knee=None)
    state = replace(state, probed=False, pending=0.0)
    return _adjust(params, target, cgroup, sample, state, now, adj, why)


def _descent(
    params: MemoryPressureParams,
    target: Target,
    cgroup: str,
    sample: CgroupSample,
    state: State,
    history: Sequence[Snapshot],
) -> Decision[State | None] | None:
    """Fast descent: memory.current stayed well below memory.high for ``descent_after``
    (after a spike has ended), so the limit goes to that time's peak plus the margin."""
    after = params.descent_after
    now = now_of(history)
    if (
        after is None
        or now - state.last_change < after
        or history[0].sample.monotonic > now - after
    ):
        return None
    used = [s.sample.cgroups[cgroup].memory_current for s in window(history, after)
            if cgroup in s.sample.cgroups]  # fmt: skip
    peak = max((u for u in used if u is not None), default=None)
    if peak is None:
        return None
    goal = max(peak * (1 + params.descent_margin), state.limit * (1 - params.max_descent))
    step = goal / state.limit - 1
    if step >= -max(params.max_probe, params.min_step):
        return None  # a probe does as well: nothing to gain from a descent
    why = (
        f"descend {step:+.2%}: memory.current peaked at {fmt_bytes(peak)} over {after:g} s, "
        f"+{params.descent_margin:.0%}"
    )
    fresh = replace(state, wait=None, knee=None, ws_ref=None, probed=False, pending=0.0)
    return _adjust(params, target, cgroup, sample, fresh, now, step, why)


def _reset(
    params: MemoryPressureParams,
    target: Target,
    cgroup: str,
    sample: CgroupSample,
    state: State | None,
    now: float,
    total: int,
) -> Decision[State | None]:
    floor, ceiling = bounds(params, sample)
    current = sample.memory_current or 0
    limit = clamp(current, floor, ceiling)
    high = sample.limits.memory_high
    fresh = State(limit=limit, last_total=total, integral=0, last_change=now)
    if high == limit:
        return Decision(replace(fresh, confirmed=True))
    if state is None:
        why = f"start at memory.current {fmt_bytes(current)}"
    else:
        why = (
            f"memory.high changed externally to {high} (expected {state.limit}); "
            f"reset to memory.current {fmt_bytes(current)}"
        )
    if limit != current & PAGE_MASK:
        bound = "floor (unreclaimable + min)" if limit > current else "ceiling"
        why += f", held at the {bound} {fmt_bytes(limit)}"
    inputs = {"memory_current": current, "floor": floor, "ceiling": ceiling}
    action = target.action(cgroup, "memory.high", high, limit, why, dict(inputs))
    return Decision(fresh, (action,))


def _adjust(
    params: MemoryPressureParams,
    target: Target,
    cgroup: str,
    sample: CgroupSample,
    state: State,
    now: float,
    factor: float,
    why: str,
) -> Decision[State | None]:
    floor, ceiling = bounds(params, sample)
    wanted = int(state.limit + state.limit * factor) & PAGE_MASK
    limit = clamp(wanted, floor, ceiling)
    inputs: dict[str, float | int | str] = {
        "integral_usec": state.integral,
        "pressure_usec": round(params.pressure * 1e6),
        "adjust": round(factor, 6),
        "memory_current": sample.memory_current or 0,
        "floor": floor,
        "ceiling": ceiling,
    }
    moved = replace(state, limit=limit, integral=0, last_change=now)
    small = factor < 0 and abs(limit - state.limit) < params.min_step * state.limit
    if limit == state.limit or small:
        # Held at a bound (or the bound leaves less than the dead band): nothing to write,
        # the interval restarts and no probe is outstanding.
        return Decision(replace(moved, limit=state.limit, probed=False))
    reason = f"{why} -> memory.high {fmt_bytes(limit)}"
    if limit != wanted:
        where = (
            "raised to the floor (unreclaimable + min)" if limit > wanted else "held at the ceiling"
        )
        reason += f", {where}; {factor:+.2%} alone gives {fmt_bytes(wanted)}"
    old = sample.limits.memory_high
    action: Action = target.action(cgroup, "memory.high", old, limit, reason, inputs)
    return Decision(replace(moved, confirmed=False), (action,))


def observe(state: State | None, entry: AuditEntry) -> State | None:
    """APPLIED: the kernel now holds our limit. DRY_RUN/RECOMMENDED/REFUSED: the limit stays
    virtual (no drift check). SKIPPED or FAILED: forget, re-read at the next tick."""
    if state is None or entry.file != "memory.high":
        return state
    if entry.outcome is Outcome.APPLIED:
        return replace(state, confirmed=True)
    if entry.outcome in (Outcome.SKIPPED, Outcome.FAILED):
        return None
    return replace(state, confirmed=False)


def trigger(params: MemoryPressureParams, cgroup: str) -> tuple[str, str, str]:
    """A PSI trigger that fires when ``some`` stall within the window reaches the target,
    so a back-off need not wait for the next tick (accounting/psi.rst: "some T W" in us,
    500 ms <= W <= 10 s)."""
    window_us = round(params.trigger_window * 1e6)
    threshold = max(1, min(round(params.pressure * 1e6), window_us))
    return (cgroup, "memory", f"some {threshold} {window_us}")
