"""The additions to senpai's law and to cpu_quota (dead band, adaptive probe interval, fast
descent, demand-sized raises, idle-streak lowering), table-driven; and the audit reason of a
clamped memory.high, which names the value written."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_enforce_controllers_support import G, M, cg, history, host, only

from enforce.actions import Action, Mode
from enforce.controllers import Target, cpu_quota, fmt_bytes
from enforce.controllers.memory_pressure import State, decide
from enforce.policy.schema import CpuQuotaParams, MemoryPressureParams
from monitor.snapshot import Snapshot
from runtime.cgroupfs.cpu import CpuMax

T = Target("r", Mode.ENFORCE, "memory_pressure")
C = "corral/web"
P = MemoryPressureParams()  # senpai's
# 1 G of memory.current as the helper splits it: a quarter anon, so the floor is 356 M.
ANON = {"anon": 256 * M, "active_file": 384 * M, "inactive_file": 384 * M}


def st(**kw: Any) -> State:
    """A confirmed 1 G limit, quiet since t=0, with ``kw`` replaced."""
    base = State(limit=1 * G, last_total=0, integral=0, last_change=0.0, confirmed=True)
    return replace(base, **kw)


def test_new_fields_default_to_senpai() -> None:
    assert (P.min_step, P.interval_growth, P.descent_after) == (0.0, 1.0, None)
    c = CpuQuotaParams()
    assert (c.min_step, c.raise_to_demand, c.raise_cooldown, c.lower_from_idle) == (
        0.01,
        False,
        None,
        False,
    )


# -- the audit reason names the value written ------------------------------------------------


@pytest.mark.parametrize(
    ("stat", "max_", "new", "tail"),
    [
        (ANON, 100 * G, int(G * 0.99) & ~4095, ""),  # not clamped: no note
        # 960 M anon: floor 1060 M is above the limit itself: the probe turns into a raise
        (
            {"anon": 960 * M, "inactive_file": 64 * M},
            100 * G,
            1060 * M,
            ", raised to the floor (unreclaimable + min); -1.00% alone gives 1013.8M",
        ),
        (ANON, 900 * M, 900 * M, ", held at the ceiling; -1.00% alone gives 1013.8M"),
    ],
)
def test_reason_states_the_value_written(
    stat: dict[str, int], max_: int, new: int, tail: str
) -> None:
    sample = cg(C, current=1 * G, stat=stat, high=1 * G, mem_some=1_000)
    d = decide(P.model_copy(update={"max": max_}), T, C, history(host(6, sample)), st())
    a = only(d.actions)
    assert a.new == new
    assert a.reason.endswith(f"-> memory.high {fmt_bytes(new)}{tail}")


# -- dead band ------------------------------------------------------------------------------

BAND = P.model_copy(update={"min_step": 0.05})


@pytest.mark.parametrize(
    ("stall", "t", "pending", "expected_new", "expected_pending"),
    [
        (1_000, 6.0, 0.0, None, 0.01),  # a 1% probe is under 5%: kept, nothing written
        (1_000, 6.0, 0.03, None, 0.04),  # still under
        (1_000, 6.0, 0.045, int(G * (1 - 0.055)) & ~4095, 0.0),  # 4.5% + 1%: written at once
        (30_000, 1.0, 0.02, int(G * 1.05) & ~4095, 0.0),  # a 2.25% back-off is made 5%
        (200_000, 1.0, 0.0, 2 * G, 0.0),  # a larger back-off is left alone (100%)
    ],
)
def test_dead_band(
    stall: int,
    t: float,
    pending: float,
    expected_new: int | None,
    expected_pending: float,
) -> None:
    sample = cg(C, current=1 * G, stat=ANON, high=1 * G, mem_some=stall)
    d = decide(BAND, T, C, history(host(t, sample)), st(pending=pending))
    assert d.state is not None
    assert d.state.pending == pytest.approx(expected_pending)
    assert d.state.last_change == t and d.state.integral == 0  # the interval restarts
    assert [a.new for a in d.actions] == ([] if expected_new is None else [expected_new])


def test_dead_band_skips_a_probe_the_floor_shrinks_below_it() -> None:
    # The floor (960 M + 100 M min - 0) leaves 1% of room: not worth a write.
    stat = {"anon": 924 * M, "inactive_file": 100 * M}
    sample = cg(C, current=1 * G, stat=stat, high=1 * G, mem_some=0)
    params = P.model_copy(update={"min_step": 0.05, "max_probe": 0.1})
    d = decide(params, T, C, history(host(6, sample)), st())
    assert d.actions == () and d.state is not None and d.state.limit == 1 * G


# -- adaptive probe interval ------------------------------------------------------------------

GROW = P.model_copy(update={"interval_growth": 2.0, "max_interval": 24.0})
KNEE = int(G * 1.1) & ~4095
UP = int(G * (1 + (3 / 20) ** 2)) & ~4095  # senpai's back-off for 3x the target stall


@pytest.mark.parametrize(
    ("before", "t", "expected_new", "expected_wait"),
    [
        # A stall 2 s after a probe from 1.1 G: back to 1.1 G (not just +2.25%), next probe
        # in 12 s.
        ({"probed": True, "knee": KNEE, "last_change": 4.0}, 6.0, KNEE, 12.0),
        ({"probed": True, "knee": KNEE, "last_change": 4.0, "wait": 12.0}, 6.0, KNEE, 24.0),
        ({"probed": True, "knee": KNEE, "last_change": 4.0, "wait": 24.0}, 6.0, KNEE, 24.0),
        # The knee is below what the back-off gives anyway: the back-off stands.
        ({"probed": True, "knee": 1 * G + 4096, "last_change": 4.0}, 6.0, UP, 12.0),
        # No probe before it (the workload grew): base interval again.
        ({"probed": False, "last_change": 4.0, "wait": 24.0}, 6.0, UP, None),
        # The probe was more than an interval (6 s) ago: not its doing.
        ({"probed": True, "knee": KNEE, "last_change": 0.0, "wait": 24.0}, 7.0, UP, None),
    ],
)
def test_backoff_after_probe_returns_to_knee_and_grows_interval(
    before: dict[str, Any], t: float, expected_new: int, expected_wait: float | None
) -> None:
    sample = cg(C, current=1 * G, stat=ANON, high=1 * G, mem_some=30_000)
    d = decide(GROW, T, C, history(host(t, sample)), st(**before))
    assert only(d.actions).new == expected_new
    assert d.state is not None and d.state.wait == expected_wait and not d.state.probed


@pytest.mark.parametrize(
    ("wait", "ws_ref", "t", "probes"),
    [
        (12.0, 256 * M, 11.0, False),  # the grown interval has not passed
        (12.0, 256 * M, 12.0, True),
        (None, None, 6.0, True),  # base interval
        (12.0, 200 * M, 6.0, True),  # working set 256 M vs 200 M at the knee: +28%, reset
        (12.0, 240 * M, 6.0, False),  # +6.7%: within reset_change (10%)
    ],
)
def test_grown_interval_and_its_reset(
    wait: float | None, ws_ref: int | None, t: float, probes: bool
) -> None:
    # Working set (memory.current - inactive_file) = 640 M here; ws_ref scaled to it.
    scale = 640 / 256
    ref = None if ws_ref is None else int(ws_ref * scale)
    sample = cg(C, current=1 * G, stat=ANON, high=1 * G, mem_some=0)
    d = decide(GROW, T, C, history(host(t, sample)), st(wait=wait, ws_ref=ref, knee=KNEE))
    assert bool(d.actions) == probes
    if probes:
        assert d.state is not None and d.state.probed and d.state.knee == 1 * G


def test_probe_then_stall_then_longer_quiet_then_probe() -> None:
    """The sawtooth slows down: probe, stall, back to the knee, and the next probe waits 2x."""
    state: State | None = st()
    writes = []
    stall = 0
    for t in range(1, 30):
        if t == 8:
            stall += 15_000  # the probe at t=6 cut into the working set: +0.56% alone
        limit = state.limit if state is not None else 1 * G
        sample = cg(C, current=limit, stat=ANON, high=limit, mem_some=stall)
        d = decide(GROW, T, C, history(host(float(t), sample)), state)
        state = d.state
        writes += [(t, a.new) for a in d.actions]
    assert writes == [(6, int(G * 0.99) & ~4095), (8, 1 * G), (20, int(G * 0.99) & ~4095)]


# -- fast descent ---------------------------------------------------------------------------

FAST = P.model_copy(update={"descent_after": 10.0, "descent_margin": 0.05, "max_descent": 0.5})


def used_history(currents: list[int], high: int = 1 * G) -> list[Snapshot]:
    """One poll a second from t=0 with these memory.current values and no stall."""
    hosts = [host(float(t), cg(C, current=c, high=high)) for t, c in enumerate(currents)]
    return history(*hosts)


@pytest.mark.parametrize(
    ("currents", "last_change", "expected"),
    [
        ([500 * M] * 12, 0.0, int(500 * M * 1.05) & ~4095),  # to the peak + 5%
        ([500 * M] * 6 + [600 * M] + [500 * M] * 5, 0.0, int(600 * M * 1.05) & ~4095),
        ([200 * M] * 12, 0.0, 512 * M),  # at most -50% at once
        ([1000 * M] * 12, 0.0, None),  # peak + 5% is above the limit: left to probing
        ([500 * M] * 12, 5.0, None),  # changed 6 s ago: not yet
        ([500 * M] * 8, 0.0, None),  # history shorter than descent_after
    ],
)
def test_fast_descent(currents: list[int], last_change: float, expected: int | None) -> None:
    h = used_history(currents)
    d = decide(FAST, T, C, h, st(last_change=last_change, wait=12.0, knee=KNEE))
    descents = [a for a in d.actions if a.reason.startswith("descend")]
    assert [a.new for a in descents] == ([] if expected is None else [expected])
    if expected is not None:
        assert d.state is not None and d.state.wait is None and d.state.knee is None


def test_no_descent_by_default() -> None:
    d = decide(P, T, C, used_history([500 * M] * 12), st())
    assert [a.reason.split(" ")[0] for a in d.actions] == ["probe"]  # senpai's 1%


# -- cpu_quota ------------------------------------------------------------------------------

CQ = Target("r", Mode.ENFORCE, "cpu_quota")
CPU = CpuQuotaParams(min=0.2, max=8.0, raise_after=1, lower_after=5, cooldown=0.0, margin=0.3)


def cpu_series(used: list[float], quota: float, some: list[float] | None = None) -> list[Snapshot]:
    """Polls 1 s apart: ``used[i]`` cores in tick i, throttled in every period when the
    quota is reached, ``some[i]`` of the tick waiting runnable (cpu.pressure)."""
    hosts, usage, periods, throttled, stall = [], 0, 0, 0, 0
    for i in range(len(used) + 1):
        if i:
            usage += round(used[i - 1] * 1e6)
            periods += 10
            throttled += 10 if used[i - 1] >= quota else 0
            stall += round((some[i - 1] if some else 0.0) * 1e6)
        sample = cg(
            C, cpu=(usage, periods, throttled), cpu_max=CpuMax(round(quota * 1e5)), cpu_some=stall
        )
        hosts.append(host(float(i), sample))
    return history(*hosts)


def run(params: CpuQuotaParams, h: list[Snapshot], state: cpu_quota.State) -> list[Action]:
    out: list[Action] = []
    for i in range(2, len(h) + 1):
        d = cpu_quota.decide(params, CQ, C, h[:i], state)
        state = d.state
        out.extend(d.actions)
    return out


def cores_of(actions: list[Action]) -> list[float]:
    return [a.new.cores for a in actions if isinstance(a.new, CpuMax) and a.new.cores]


@pytest.mark.parametrize(
    ("some", "expected"),
    [
        (0.0, 1.5),  # no pressure figure: step_up (+50%)
        (0.2, 1.625),  # demand 1.25 cores + 30%
        (0.75, 5.2),  # demand 4 cores + 30%
        (0.999, 8.0),  # the estimate is capped (20x) and bounded by max
    ],
)
def test_raise_to_demand(some: float, expected: float) -> None:
    params = CPU.model_copy(update={"raise_to_demand": True})
    h = cpu_series([1.0], 1.0, [some])
    assert cores_of(run(params, h, cpu_quota.State())) == pytest.approx([expected])
    assert cores_of(run(CPU, h, cpu_quota.State())) == [1.5]  # off: step_up only


@pytest.mark.parametrize(
    ("raise_cooldown", "used", "ticks", "expected"),
    [
        (None, 1.0, 3, []),  # the 60 s cooldown holds the raise
        (2.0, 1.0, 3, [1.5]),  # a starved quota waits 2 s only
        (2.0, 0.1, 8, []),  # a lowering (idle from t=5) still waits the 60 s
        (10.0, 0.1, 8, []),
    ],
)
def test_raise_cooldown(
    raise_cooldown: float | None, used: float, ticks: int, expected: list[float]
) -> None:
    params = CPU.model_copy(update={"cooldown": 60.0, "raise_cooldown": raise_cooldown})
    h = cpu_series([used] * ticks, 1.0)
    assert cores_of(run(params, h, cpu_quota.State(last_change=0.0))) == expected


@pytest.mark.parametrize(
    ("from_idle", "expected"),
    [
        (False, 3.9),  # p95 over the window still holds the finished spike: 3 * 1.3
        (True, 0.26),  # p95 of the idle streak: 0.2 * 1.3
    ],
)
def test_lower_from_idle_streak(from_idle: bool, expected: float) -> None:
    params = CPU.model_copy(update={"lower_from_idle": from_idle, "step_down": 0.95})
    h = cpu_series([3.0] * 10 + [0.2] * 5, 4.0)
    assert cores_of(run(params, h, cpu_quota.State())) == pytest.approx([expected])


@pytest.mark.parametrize(
    ("min_step", "expected"),
    [(0.01, [0.78]), (0.2, [0.78]), (0.25, [])],  # 1.0 -> 0.78 is a 22% step
)
def test_cpu_dead_band(min_step: float, expected: list[float]) -> None:
    params = CPU.model_copy(update={"min_step": min_step, "idle_below": 0.75, "step_down": 0.5})
    h = cpu_series([0.6] * 5, 1.0)
    assert cores_of(run(params, h, cpu_quota.State())) == pytest.approx(expected)
