"""memory_pressure: senpai's law, table-driven against hand-computed figures."""

from __future__ import annotations

import pytest
from test_enforce_controllers_support import G, M, cg, entry, history, host, only

from enforce.actions import Mode, Outcome
from enforce.controllers import Target, memory_pressure
from enforce.controllers.memory_pressure import State, bounds, decide, observe, trigger
from enforce.policy.schema import MemoryPressureParams
from runtime.cgroupfs.formats import MAX

P = MemoryPressureParams()  # senpai's defaults
T = Target("r", Mode.ENFORCE, "memory_pressure")
C = "corral/web"


def test_defaults_are_senpais() -> None:
    assert (P.interval, P.pressure, P.max_probe, P.max_backoff) == (6.0, 0.010, 0.01, 1.0)
    assert (P.coeff_probe, P.coeff_backoff, P.min, P.max) == (10, 20, 100 * M, 100 * G)


def test_first_tick_sets_memory_high_to_current() -> None:
    h = history(host(0, cg(C, current=1 * G + 5000, high=MAX)))
    d = decide(P, T, C, h, None)
    a = only(d.actions)
    assert (a.file, a.old, a.new) == ("memory.high", MAX, 1 * G + 4096)  # page aligned down
    assert d.state is not None and d.state.limit == 1 * G + 4096 and not d.state.confirmed


def test_no_action_when_memory_high_already_is_current() -> None:
    d = decide(P, T, C, history(host(0, cg(C, current=1 * G, high=1 * G))), None)
    assert d.actions == () and d.state is not None and d.state.confirmed


def _state(limit: int = 1 * G, integral: int = 0, last_change: float = 0.0) -> State:
    return State(
        limit=limit, last_total=0, integral=integral, last_change=last_change, confirmed=True
    )


@pytest.mark.parametrize(
    ("stall_usec", "t", "expected_factor"),
    [
        (30_000, 1.0, 1 + (3 / 20) ** 2),  # 3x the target: back off 2.25% at once
        (200_000, 1.0, 1 + 1.0),  # 20x: capped at max_backoff (doubles)
        (10_000, 1.0, None),  # at the target exactly: not above, within the interval
        (1_000, 6.0, 1 - 0.01),  # quiet for the interval at 1/10 target: full probe (1%)
        (5_000, 6.0, 1 - (2 / 10) ** 2 * 0.01),  # half the target: gentle probe
        (0, 5.9, None),  # quiet but the interval has not passed
    ],
)
def test_senpai_adjustment(stall_usec: int, t: float, expected_factor: float | None) -> None:
    h = history(host(t, cg(C, current=1 * G, high=1 * G, mem_some=stall_usec)))
    d = decide(P, T, C, h, _state())
    if expected_factor is None:
        assert d.actions == ()
        assert d.state is not None and d.state.integral == stall_usec
        return
    a = only(d.actions)
    assert a.new == int(G * expected_factor) & ~4095
    assert a.old == 1 * G and a.inputs["integral_usec"] == stall_usec
    assert d.state is not None and d.state.integral == 0 and d.state.last_change == t


def test_integral_accumulates_across_ticks_until_backoff() -> None:
    state: State | None = _state()
    totals = [4_000, 8_000, 12_000]  # 4 ms per tick: the third tick passes 10 ms
    results = []
    for i, total in enumerate(totals, start=1):
        d = decide(P, T, C, history(host(i, cg(C, high=1 * G, mem_some=total))), state)
        state = d.state
        results.append(len(d.actions))
    assert results == [0, 0, 1]


def test_probe_stops_at_floor_of_unreclaimable_plus_min() -> None:
    # 900M anon, 100M cache: the floor is 900M + 100M (min) = 1000M, above 1G*0.99.
    stat = {"anon": 900 * M, "active_file": 50 * M, "inactive_file": 50 * M}
    sample = cg(C, current=1000 * M, stat=stat, high=1000 * M + 4 * M)
    assert bounds(P, sample) == (1000 * M, 100 * G)
    d = decide(P, T, C, history(host(6, sample)), _state(limit=1000 * M + 4 * M))
    assert only(d.actions).new == 1000 * M


def test_floor_respects_memory_min_and_ceiling_memory_max() -> None:
    sample = cg(C, current=10 * M, memory_min=300 * M, memory_max=2 * G)
    assert bounds(P, sample) == (300 * M, 2 * G)


def test_held_at_bound_writes_nothing_and_restarts_interval() -> None:
    anon = {"anon": 100 * M, "active_file": 0, "inactive_file": 0}
    sample = cg(C, current=100 * M, stat=anon, high=200 * M, mem_some=0)
    d = decide(P, T, C, history(host(6, sample)), _state(limit=200 * M))
    assert d.actions == ()  # floor is 200M: already there
    assert d.state is not None and d.state.last_change == 6


def test_external_change_resets_to_current_like_senpai() -> None:
    sample = cg(C, current=700 * M, high=2 * G)  # someone wrote 2G; we had 1G
    d = decide(P, T, C, history(host(3, sample)), _state(limit=1 * G))
    a = only(d.actions)
    assert (a.old, a.new) == (2 * G, 700 * M) and "externally" in a.reason


def test_unconfirmed_limit_is_not_drift_in_dry_run() -> None:
    # Dry run: the kernel keeps max while the virtual limit moves on; no reset.
    state = State(limit=1 * G, last_total=0, integral=0, last_change=0.0, confirmed=False)
    d = decide(P, T, C, history(host(6, cg(C, high=MAX, mem_some=0))), state)
    assert only(d.actions).new == int(G * 0.99) & ~4095


def test_observe_outcomes() -> None:
    h = history(host(0, cg(C, current=1 * G, high=MAX)))
    d = decide(P, T, C, h, None)
    a = only(d.actions)
    assert d.state is not None
    assert observe(d.state, entry(a, Outcome.APPLIED)) == State(1 * G, 0, 0, 0.0, True)
    assert observe(d.state, entry(a, Outcome.SKIPPED)) is None
    assert observe(d.state, entry(a, Outcome.FAILED)) is None
    dry = observe(d.state, entry(a, Outcome.DRY_RUN))
    assert dry is not None and not dry.confirmed


def test_no_memory_controller_no_action() -> None:
    h = history(host(0, cg(C, high=None)))
    assert decide(P, T, C, h, None).actions == ()


def test_trigger_string() -> None:
    assert trigger(P, C) == (C, "memory", "some 10000 1000000")
    assert memory_pressure.trigger(P.model_copy(update={"trigger_window": 2.0}), C)[2] == (
        "some 10000 2000000"
    )


@pytest.mark.parametrize(
    ("memory_max", "high", "expected"),
    [
        (1 * G, 1 * G - 64 * M, int((G - 64 * M) * 1.25) & ~4095),  # within 12.5%: raise
        (2 * G, 1 * G, None),  # plenty of headroom
        (MAX, 1 * G, None),  # no memory.max to raise
        (1 * G + 200 * M, 1 * G, None),  # 19.5% above: more than half the headroom
    ],
)
def test_memory_max_headroom_only_raises(
    memory_max: object, high: int, expected: int | None
) -> None:
    params = P.model_copy(update={"memory_max_headroom": 0.25})
    sample = cg(C, current=high, high=high, memory_max=memory_max)  # type: ignore[arg-type]
    state = State(limit=high, last_total=0, integral=0, last_change=0.0, confirmed=True)
    d = decide(params, T, C, history(host(1, sample)), state)
    raised = [a.new for a in d.actions if a.file == "memory.max"]
    assert raised == ([] if expected is None else [expected])
    assert decide(P, T, C, history(host(1, sample)), state).actions == ()  # off by default


def test_start_below_floor_says_so() -> None:
    h = history(host(0, cg(C, current=1 * M, high=MAX)))
    a = only(decide(P, T, C, h, None).actions)
    assert a.new == (1 * M // 4 + 100 * M) & ~4095  # a quarter is anon (the helper's split)
    assert (
        a.reason == "start at memory.current 1.0M, held at the floor (unreclaimable + min) 100.2M"
    )
