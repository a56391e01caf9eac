"""enforce.simulate: the synthetic traces and the kernel model's responses to limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforce.actions import IoLimit
from enforce.simulate.kernel_model import KernelModel
from enforce.simulate.traces import (
    SYNTHETIC,
    Trace,
    TraceError,
    Workload,
    from_recording,
    leak,
    load_trace,
    spiky_batch,
)
from monitor.recording import RecordingWriter
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoMax

MIB = 1 << 20
APP = "corral/app"


def _trace(ws: int, cache: int, cpu: float, pids: int = 10, ticks: int = 5, **kw: object) -> Trace:
    w = Workload(
        cgroup=APP,
        working_set=(ws,) * ticks,
        cache=(cache,) * ticks,
        cpu=(cpu,) * ticks,
        pids=(pids,) * ticks,
        io_read=(4e6,) * ticks,
        io_write=(0.0,) * ticks,
        **kw,  # type: ignore[arg-type]
    )
    return Trace("t", 1.0, (w,))


# -- traces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_traces_are_deterministic(name: str) -> None:
    a, b = SYNTHETIC[name](), SYNTHETIC[name]()
    assert a == b
    assert a.ticks >= 1800 and a.tick_seconds == 1.0
    assert all(w.cgroup.startswith("corral/") for w in a.workloads)


def test_seed_changes_the_noise_not_the_shape() -> None:
    assert spiky_batch(seed=4) != spiky_batch(seed=5)
    a, b = leak(seed=1).workloads[0], leak(seed=2).workloads[0]
    assert a.working_set != b.working_set
    assert abs(a.working_set[-1] - b.working_set[-1]) < 20 * MIB


def test_leak_crosses_its_declared_limit() -> None:
    w = leak().workloads[0]
    assert w.memory_max == 1 << 30
    assert w.working_set[0] < 256 * MIB < (1 << 30) < w.working_set[-1]


def test_load_trace_names_the_bad_name_and_the_allowed_ones() -> None:
    with pytest.raises(TraceError) as e:
        load_trace("synthetic:nightly")
    assert "'nightly'" in str(e.value)
    assert "synthetic:diurnal, synthetic:step, synthetic:leak" in str(e.value)
    with pytest.raises(TraceError, match="no such recording"):
        load_trace("/nonexistent/x.rec")
    assert load_trace("synthetic:step").name == "step"


def test_demand_series_must_have_equal_length() -> None:
    with pytest.raises(ValueError, match="every demand series needs 2 ticks"):
        Workload(APP, (1, 2), (1,), (0.1, 0.1), (1, 1), (0.0, 0.0), (0.0, 0.0))


def test_recording_round_trip_gives_the_demand_back(tmp_path: Path) -> None:
    trace = _trace(300 * MIB, 100 * MIB, 0.5, ticks=6, memory_max=1 << 30)
    model = KernelModel(trace)
    path = tmp_path / "sim.rec"
    with RecordingWriter(path, meta={"interval_seconds": 1.0}) as writer:
        for t in range(trace.ticks):
            snap, _ = model.step(t)
            writer.write(snap.sample, snap.names, collect_seconds=0.0)
    back = from_recording(str(path))
    assert back.tick_seconds == pytest.approx(1.0)
    assert [w.cgroup for w in back.workloads] == [APP]  # the leaf, not its parent "corral"
    w = back.workloads[0]
    assert w.working_set == (300 * MIB,) * 5
    assert w.cache == (100 * MIB,) * 5
    assert w.cpu == pytest.approx((0.5,) * 5)
    assert w.memory_max == 1 << 30


# -- the kernel model -----------------------------------------------------------------------


def _run(model: KernelModel, ticks: int):  # type: ignore[no-untyped-def]
    out = []
    for t in range(ticks):
        out.append(model.step(t))
    return out


def test_working_set_over_memory_max_is_oom_killed_and_restarts() -> None:
    model = KernelModel(_trace(600 * MIB, 0, 0.5, ticks=14, memory_max=512 * MIB), restart_ticks=3)
    steps = _run(model, 14)
    events = [s.sample.cgroups[APP].memory_events for s, _ in steps]
    assert [r[APP].oom_kill for _, r in steps][:5] == [True, False, False, False, True]
    assert events[0].oom_kill == events[0].oom == events[0].max == 1
    assert events[-1].oom_kill == 4  # ticks 0, 4, 8, 12
    assert steps[1][0].sample.cgroups[APP].memory_current == 0  # down while restarting
    assert steps[1][1][APP].down


def test_memory_high_below_working_set_stalls_without_killing() -> None:
    model = KernelModel(_trace(600 * MIB, 100 * MIB, 1.0, ticks=3, memory_high=500 * MIB))
    _, (snap, r1), _ = _run(model, 3)
    sample = snap.sample.cgroups[APP]
    assert sample.memory_events.oom_kill == 0 and sample.memory_events.high == 2
    assert sample.memory_current == 600 * MIB  # anon cannot be reclaimed: held at the ws
    # stall share = 0.02 (all cache evicted) + 0.2 + 4 * 100/600 of the tick, capped at 1
    assert r1[APP].memory_stall == pytest.approx(min(0.02 + 0.2 + 4 * 100 / 600, 1.0))
    model_figs = snap.models[APP]
    assert model_figs.pressure_memory_some == pytest.approx(r1[APP].memory_stall)
    assert model_figs.pressure_memory_full == pytest.approx(r1[APP].memory_stall / 2)
    assert sample.pressure["memory"].some.avg10 > 0
    assert r1[APP].cpu_used < 1.0  # stalled tasks make less progress


def test_memory_high_squeezing_cache_holds_current_at_high() -> None:
    model = KernelModel(_trace(400 * MIB, 200 * MIB, 0.2, ticks=2, memory_high=500 * MIB))
    _, (snap, r) = _run(model, 2)
    sample = snap.sample.cgroups[APP]
    assert sample.memory_current == 500 * MIB
    assert sample.memory_stat["inactive_file"] == 100 * MIB
    assert snap.models[APP].working_set_bytes == 400 * MIB
    assert r[APP].memory_stall == pytest.approx(0.02 * 0.5**2)  # half the cache refaults


def test_cpu_over_quota_is_throttled_and_capped() -> None:
    model = KernelModel(_trace(100 * MIB, 0, 2.0, ticks=3, cpu_max=CpuMax(50_000, 100_000)))
    _, (snap, r), _ = _run(model, 3)
    stat = snap.sample.cgroups[APP].cpu
    assert stat.nr_periods == 20 and stat.nr_throttled == 20  # 10 periods a second
    assert stat.throttled_usec == 2 * 750_000  # 1 - 0.5 / 2 of each second
    assert r[APP].cpu_used == 0.5 and r[APP].throttled_seconds == pytest.approx(0.75)
    assert snap.models[APP].cpu_cores == pytest.approx(0.5)
    assert snap.models[APP].throttled_ratio == 1.0
    assert snap.models[APP].pressure_cpu_some == pytest.approx(0.75)


def test_cpu_under_quota_is_not_throttled() -> None:
    model = KernelModel(_trace(100 * MIB, 0, 0.3, ticks=2, cpu_max=CpuMax(50_000, 100_000)))
    _, (snap, r) = _run(model, 2)
    assert snap.sample.cgroups[APP].cpu.nr_throttled == 0
    assert r[APP].throttled_seconds == 0 and r[APP].cpu_used == pytest.approx(0.3)


def test_pids_over_max_fail_forks_in_pids_events() -> None:
    model = KernelModel(_trace(100 * MIB, 0, 0.1, pids=300, ticks=2, pids_max=256))
    _, (snap, r) = _run(model, 2)
    sample = snap.sample.cgroups[APP]
    assert sample.pids_current == 256 and sample.pids_events.max == 88
    assert r[APP].fork_failures == 44


def test_writes_land_in_limits_rounded_to_pages() -> None:
    model = KernelModel(_trace(100 * MIB, 0, 0.1, ticks=2))
    model.write(APP, "memory.high", 1_000_000_000)
    model.write(APP, "cpu.max", CpuMax(20_000, 100_000))
    model.write(APP, "pids.max", 64)
    dev = Device(8, 0)
    model.write(APP, "io.max", IoLimit(dev, IoMax(rbps=1_000_000)))
    snap, _ = model.step(0)
    limits = snap.sample.cgroups[APP].limits
    assert limits.memory_high == 999_997_440  # the kernel keeps whole pages
    assert limits.cpu_max == CpuMax(20_000, 100_000) and limits.pids_max == 64
    assert model.read(APP, "memory.high") == 999_997_440
    assert model.read(APP, "io.max") == IoLimit(dev, IoMax(rbps=1_000_000))
    # io.max caps the 4 MB/s of reads at 1 MB/s; the rest waits (io pressure).
    io = snap.sample.cgroups[APP].io
    assert io is not None and io[dev].rbytes == 1_000_000
    with pytest.raises(ValueError, match="only workloads are modelled"):
        model.write("corral", "memory.high", MAX)


def test_cgroup_kill_restarts_the_workload() -> None:
    model = KernelModel(_trace(100 * MIB, 0, 0.5, ticks=4), restart_ticks=2)
    model.step(0)
    model.write(APP, "cgroup.kill", True)
    (snap, r), (_, r2), (_, r3) = (model.step(t) for t in (1, 2, 3))
    assert r[APP].killed and r[APP].down and snap.sample.cgroups[APP].pids_current == 0
    assert r2[APP].down and not r3[APP].down
    events = snap.sample.cgroups[APP].events
    assert events is not None and not events.populated


def test_parent_sums_its_children_and_has_no_limits() -> None:
    model = KernelModel(SYNTHETIC["fork_storm"]())
    snap, _ = model.step(0)
    parent = snap.sample.cgroups["corral"]
    kids = [snap.sample.cgroups[p] for p in ("corral/forky", "corral/neighbour")]
    assert parent.memory_current == sum(k.memory_current or 0 for k in kids)
    assert parent.pids_current == sum(k.pids_current or 0 for k in kids)
    assert parent.limits.memory_max is MAX and parent.limits.cpu_max == CpuMax(MAX)
    assert snap.names["corral"].kind == "cgroup" and snap.names["corral/forky"].kind == "container"
