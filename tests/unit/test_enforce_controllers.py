"""Table-driven decisions of limits, cpu_quota, pids_guard, io_pressure and oom_guard
(memory_pressure: test_enforce_controllers_memory.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from test_enforce_controllers_support import G, M, cg, entry, history, host, only, summary

from enforce.actions import Action, IoLimit, Mode, Outcome
from enforce.controllers import (
    Decision,
    Target,
    cpu_quota,
    io_pressure,
    limits,
    oom_guard,
    pids_guard,
)
from enforce.policy.schema import (
    CpuQuotaParams,
    IoPressureParams,
    LimitsParams,
    OomGuardParams,
    PidsGuardParams,
)
from monitor.sample import HostSample
from monitor.snapshot import Snapshot
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoMax

C = "corral/web"


def T(controller: str) -> Target:
    return Target("r", Mode.ENFORCE, controller)


# -- limits -------------------------------------------------------------------------------


def test_limits_writes_only_what_differs() -> None:
    params = LimitsParams.model_validate(
        {"memory_max": "2G", "memory_high": "1G", "pids_max": 100, "cpu_max": "0.5"}
    )
    sample = cg(C, high=1 * G, memory_max=MAX, pids=3, pids_max=MAX, cpu_max=CpuMax(MAX))
    d = limits.decide(params, T("limits"), C, history(host(0, sample)), None)
    assert summary(d.actions) == [
        (C, "memory.max", 2 * G),
        (C, "cpu.max", CpuMax(50_000, 100_000)),
        (C, "pids.max", 100),
    ]
    assert all("static limit" in a.reason for a in d.actions)


def test_limits_reapplies_drift_and_says_so() -> None:
    params = LimitsParams.model_validate({"memory_max": "2G"})
    h = history(host(0, cg(C, memory_max=MAX)))
    d = limits.decide(params, T("limits"), C, h, None)
    state = limits.observe(d.state, entry(only(d.actions), Outcome.APPLIED))
    assert (
        limits.decide(
            params, T("limits"), C, history(host(1, cg(C, memory_max=2 * G))), state
        ).actions
        == ()
    )
    d = limits.decide(params, T("limits"), C, history(host(2, cg(C, memory_max=3 * G))), state)
    a = only(d.actions)
    assert (a.old, a.new) == (3 * G, 2 * G)
    assert a.reason.startswith("drift: memory.max was changed to 3221225472")
    assert d.state.drifts == 1


def test_limits_io_max_per_device() -> None:
    dev = Device(8, 0)
    params = LimitsParams.model_validate({"io_max": ["8:0 wbps=1M"]})
    sample = cg(C, io_max={})
    a = only(limits.decide(params, T("limits"), C, history(host(0, sample)), None).actions)
    assert a.old == IoLimit(dev, IoMax()) and a.new == IoLimit(dev, IoMax(wbps=1 * M))
    held = cg(C, io_max={dev: IoMax(wbps=1 * M)})
    assert limits.decide(params, T("limits"), C, history(host(0, held)), None).actions == ()


def test_limits_skip_files_the_cgroup_lacks() -> None:
    params = LimitsParams.model_validate({"pids_max": 10})
    assert limits.decide(params, T("limits"), C, history(host(0, cg(C))), None).actions == ()


# -- cpu_quota ----------------------------------------------------------------------------


def cpu_history(
    ticks: int, used: float, throttled: float, quota: float, t0: float = 0.0
) -> list[Snapshot]:
    """``ticks``+1 polls 1 s apart: ``used`` cores, ``throttled`` of 10 periods per tick."""
    hosts = []
    for i in range(ticks + 1):
        stat = (round(i * used * 1e6), i * 10, round(i * 10 * throttled))
        sample = cg(C, cpu=stat, cpu_max=CpuMax(round(quota * 100_000)))
        hosts.append(host(t0 + i, sample))
    return history(*hosts)


def run_cpu(
    params: CpuQuotaParams, h: list[Snapshot], state: cpu_quota.State | None = None
) -> tuple[list[Action], cpu_quota.State]:
    """Feed the history tick by tick, as the loop does; the actions of every tick."""
    actions: list[Action] = []
    now = state or cpu_quota.State()
    for i in range(2, len(h) + 1):
        d = cpu_quota.decide(params, T("cpu_quota"), C, h[:i], now)
        now = d.state
        actions.extend(d.actions)
    return actions, now


def cores(actions: list[Action]) -> list[float | None]:
    return [a.new.cores if isinstance(a.new, CpuMax) else None for a in actions]


CPU = CpuQuotaParams(min=0.2, max=2.0, raise_after=3, lower_after=5, cooldown=0.0)


@pytest.mark.parametrize(
    ("used", "throttled", "quota", "ticks", "expected_cores"),
    [
        (1.0, 0.5, 1.0, 3, [1.5]),  # starved 3 ticks: +50%
        (1.0, 0.5, 1.0, 2, []),  # only 2 ticks: not yet
        (1.0, 0.05, 1.0, 5, []),  # throttled under the 10% target
        (1.8, 0.5, 1.8, 3, [2.0]),  # capped at max
        (0.1, 0.0, 1.0, 5, [0.8]),  # idle 5 ticks: p95*1.3 = 0.13, at most -20% at once
        (0.1, 0.0, 0.25, 5, [0.2]),  # toward usage but not below min
        (0.6, 0.0, 1.0, 5, []),  # 60% busy is not idle
    ],
)
def test_cpu_quota_table(
    used: float, throttled: float, quota: float, ticks: int, expected_cores: list[float]
) -> None:
    actions, _ = run_cpu(CPU, cpu_history(ticks, used, throttled, quota))
    assert cores(actions) == expected_cores


def test_cpu_quota_lowers_to_percentile_plus_margin() -> None:
    params = CPU.model_copy(update={"step_down": 0.9, "min": 0.1})
    actions, _ = run_cpu(params, cpu_history(5, 0.1, 0.0, 1.0))
    assert cores(actions) == [0.13]


def test_cpu_quota_cooldown() -> None:
    params = CPU.model_copy(update={"cooldown": 10.0})
    actions, _ = run_cpu(params, cpu_history(9, 1.0, 0.5, 1.0))
    assert len(actions) == 1  # the second raise waits for the cooldown


def test_cpu_quota_brings_unlimited_inside_bounds() -> None:
    h = history(host(0, cg(C, cpu=(0, 0, 0), cpu_max=CpuMax(MAX))))
    a = only(cpu_quota.decide(CPU, T("cpu_quota"), C, h, None).actions)
    assert a.new == CpuMax(200_000, 100_000)


def test_cpu_quota_external_change_backs_off() -> None:
    h = cpu_history(3, 1.0, 0.5, 1.0)
    state = cpu_quota.State(starved=5, expected=CpuMax(150_000))
    d = cpu_quota.decide(CPU, T("cpu_quota"), C, h, state)
    assert d.actions == () and d.state == cpu_quota.State(last_change=3.0)


def test_cpu_quota_observe() -> None:
    h = cpu_history(3, 1.0, 0.5, 1.0)
    actions, state = run_cpu(CPU, h)
    applied = cpu_quota.observe(state, entry(actions[0], Outcome.APPLIED))
    assert applied is not None and applied.expected == CpuMax(150_000, 100_000)
    skipped = cpu_quota.observe(state, entry(actions[0], Outcome.SKIPPED))
    assert skipped == cpu_quota.State(last_change=state.last_change)


# -- pids_guard ---------------------------------------------------------------------------

PIDS = PidsGuardParams(headroom=100, min=50, max=1000, hold=30.0, cooldown=0.0)


@pytest.mark.parametrize(
    ("current", "limit", "expected"),
    [
        (10, MAX, 110),  # unlimited: current + headroom
        (10, 30, 110),  # below min: into bounds
        (970, 1000, None),  # at max already
        (80, 110, 180),  # less than half the headroom left: raise
        (50, 110, None),  # 60 left: fine
        (10, 400, 110),  # more than twice the headroom unused: lower
        (10, 200, None),  # 190 unused: within hysteresis
        (0, 200, None),  # 200 unused of 2*100: not more
        (950, 990, 1000),  # raise, clamped to max
    ],
)
def test_pids_guard_table(current: int, limit: object, expected: int | None) -> None:
    h = history(host(0, cg(C, pids=current, pids_max=limit)))  # type: ignore[arg-type]
    d = pids_guard.decide(PIDS, T("pids_guard"), C, h, None)
    assert [a.new for a in d.actions] == ([] if expected is None else [expected])


def test_pids_guard_holds_during_fork_storm() -> None:
    state = pids_guard.decide(
        PIDS, T("pids_guard"), C, history(host(0, cg(C, pids=95, pids_max=110, refused=4))), None
    ).state
    # Forks are being refused (pids.events max 4 -> 40) while pids.current is at the limit.
    h = history(host(1, cg(C, pids=110, pids_max=110, refused=40)))
    d = pids_guard.decide(PIDS, T("pids_guard"), C, h, state)
    assert d.actions == ()
    assert d.notes == (f"{C}: fork storm: 36 forks refused at pids.max 110, holding it",)
    # Still held 29 s later; raised once the hold (30 s) has passed without refusals.
    h = history(host(30, cg(C, pids=110, pids_max=110, refused=40)))
    assert pids_guard.decide(PIDS, T("pids_guard"), C, h, d.state).actions == ()
    h = history(host(31.5, cg(C, pids=110, pids_max=110, refused=40)))
    assert [a.new for a in pids_guard.decide(PIDS, T("pids_guard"), C, h, d.state).actions] == [210]


def test_pids_guard_cooldown() -> None:
    params = PIDS.model_copy(update={"cooldown": 5.0})
    state = pids_guard.State(refused=0, last_change=0.0)
    h = history(host(4, cg(C, pids=100, pids_max=110)))
    assert pids_guard.decide(params, T("pids_guard"), C, h, state).actions == ()
    h = history(host(5, cg(C, pids=100, pids_max=110)))
    assert len(pids_guard.decide(params, T("pids_guard"), C, h, state).actions) == 1


# -- io_pressure --------------------------------------------------------------------------

DEV = Device(8, 0)
IO = IoPressureParams(
    protect=("corral/db",), devices=("8:0",), target=0.2, restore_below=0.05, wbps=10 * M, hold=5
)


def io_step(
    t: float, db_some: int, state: io_pressure.State | None, batch_max: IoMax | None = None
) -> Decision[io_pressure.State]:
    prev = host(t - 1, cg("corral/db", io_some=0), cg("corral/batch", io_max={}))
    lines = {DEV: batch_max} if batch_max is not None else {}
    cur = host(t, cg("corral/db", io_some=db_some), cg("corral/batch", io_max=lines))
    return io_pressure.decide(IO, T("io_pressure"), ["corral/batch"], history(prev, cur), state)


def test_io_pressure_caps_then_restores_after_hold() -> None:
    d = io_step(1, 300_000, None)  # 30% of the second stalled > 20%
    a = only(d.actions)
    assert (a.cgroup, a.old, a.new) == (
        "corral/batch",
        IoLimit(DEV, IoMax()),
        IoLimit(DEV, IoMax(wbps=10 * M)),
    )
    capped = IoMax(wbps=10 * M)
    d = io_step(2, 300_000, d.state, capped)
    assert d.actions == ()  # already capped
    d = io_step(3, 100_000, d.state, capped)
    assert d.actions == ()  # 10%: between restore_below and target, hold the cap
    d = io_step(4, 10_000, d.state, capped)
    assert d.actions == () and d.state.below_since == 4
    d = io_step(8, 10_000, d.state, capped)
    assert d.actions == ()  # 4 s below: hold is 5 s
    d = io_step(9, 10_000, d.state, capped)
    a = only(d.actions)
    assert (a.old, a.new) == (IoLimit(DEV, capped), IoLimit(DEV, IoMax()))
    assert d.state == io_pressure.State()


def test_io_pressure_never_loosens_a_tighter_cap() -> None:
    d = io_step(1, 300_000, None, IoMax(wbps=1 * M))
    assert d.actions == ()


def test_io_pressure_triggers_on_protected() -> None:
    h = history(host(0, cg("corral/db", io_some=0), cg("corral/batch")))
    assert io_pressure.triggers(IO, h[-1]) == [("corral/db", "io", "some 200000 1000000")]


# -- oom_guard ----------------------------------------------------------------------------

OOM = OomGuardParams(full_avg10=0.3, duration=10.0, post_action_delay=15.0)


def oom_host(t: float, avg10: float, pgscan: int, sizes: dict[str, int]) -> HostSample:
    root = cg("corral", full_avg10=avg10, stat={"pgscan": pgscan, "pgsteal": pgscan})
    return host(t, root, *(cg(p, current=s) for p, s in sizes.items()))


def run_oom(
    params: OomGuardParams, hosts: Sequence[HostSample], state: oom_guard.State | None = None
) -> list[Decision[oom_guard.State]]:
    snaps = history(*hosts)
    out = []
    for i in range(1, len(snaps) + 1):
        cgroups = [p for p in snaps[i - 1].sample.cgroups if p != "corral"]
        d = oom_guard.decide(params, T("oom_guard"), cgroups, snaps[:i], state, "corral")
        state = d.state
        out.append(d)
    return out


SIZES = {"corral/a": 1 * G, "corral/b": 3 * G, "corral/c": 2 * G}


def test_oom_guard_freezes_then_kills_largest_after_duration() -> None:
    hosts = [oom_host(t, 50.0, 1000 * t, SIZES) for t in range(0, 12)]
    results = run_oom(OOM, hosts)
    assert all(r.actions == () for r in results[:10])  # above for < 10 s
    kill = results[10].actions
    assert summary(kill) == [("corral/b", "cgroup.freeze", True), ("corral/b", "cgroup.kill", True)]
    assert kill[0].old is False
    assert results[11].actions == ()  # post-action delay


def test_oom_guard_needs_reclaim() -> None:
    hosts = [oom_host(t, 50.0, 1000, SIZES) for t in range(0, 12)]  # pgscan flat
    results = run_oom(OOM, hosts)
    assert all(r.actions == () for r in results)
    assert "without reclaim" in results[-1].notes[0]


def test_oom_guard_below_limit_resets() -> None:
    hosts = [oom_host(t, 50.0 if t != 5 else 10.0, 1000 * t, SIZES) for t in range(0, 12)]
    results = run_oom(OOM, hosts)
    assert all(r.actions == () for r in results)  # the dip at t=5 restarts the 10 s


def test_oom_guard_prefer_avoid_and_growth() -> None:
    params = OOM.model_copy(update={"avoid": ("b",), "prefer": ()})
    hosts = [oom_host(t, 50.0, 1000 * t, SIZES) for t in range(0, 11)]
    assert run_oom(params, hosts)[10].actions[1].cgroup == "corral/c"
    params = OOM.model_copy(update={"prefer": ("corral/a",)})
    assert run_oom(params, hosts)[10].actions[1].cgroup == "corral/a"
    params = OOM.model_copy(update={"choose": "growth"})
    growing = [
        oom_host(t, 50.0, 1000 * t, {**SIZES, "corral/a": 1 * G + t * 100 * M}) for t in range(11)
    ]
    assert run_oom(params, growing)[10].actions[1].cgroup == "corral/a"


def test_oom_guard_never_picks_the_watched_cgroup_or_an_ancestor() -> None:
    hosts = [oom_host(t, 50.0, 1000 * t, SIZES) for t in range(0, 11)]
    snaps = history(*hosts)
    candidates = ["corral", "corral/a"]  # "corral" is watched and the largest
    state = None
    for i in range(1, len(snaps) + 1):
        d = oom_guard.decide(OOM, T("oom_guard"), candidates, snaps[:i], state, "corral")
        state = d.state
    assert summary(d.actions)[1] == ("corral/a", "cgroup.kill", True)


def test_oom_guard_post_action_delay_then_again() -> None:
    hosts = [oom_host(t, 50.0, 1000 * t, SIZES) for t in range(0, 40)]
    kills = [i for i, r in enumerate(run_oom(OOM, hosts)) if r.actions]
    assert kills == [10, 25]  # 10 s above, then 15 s delay (pressure stayed above)
