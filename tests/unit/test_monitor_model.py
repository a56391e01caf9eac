"""The model: rates and ratios from two synthetic but consistent samples, checked exactly
(every figure below is a power-of-two fraction, so float arithmetic is exact)."""

from __future__ import annotations

from dataclasses import replace

from monitor.model import build_model, working_set
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName, build_snapshot
from runtime.cgroupfs import MAX
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.io import Device, IoStat
from runtime.cgroupfs.pressure import Pressure, PressureLine

DT = 2.0  # seconds between the two samples
VDA, VDB = Device(254, 0), Device(254, 16)


def _pressure(some: int, full: int | None) -> Pressure:
    line = PressureLine(0.0, 0.0, 0.0, some)
    return Pressure(line, None if full is None else PressureLine(0.0, 0.0, 0.0, full))


def _sample(
    usage: int,
    periods: int,
    throttled: int,
    wbytes: int,
    mem_some: int,
    *,
    cpu_max: CpuMax | None = None,
) -> CgroupSample:
    """A cgroup whose counters are the arguments; user time is 3/4 of usage."""
    return CgroupSample(
        path="web",
        cpu=CpuStat(usage, usage * 3 // 4, usage // 4, periods, throttled, 0),
        memory_current=96 << 20,
        memory_stat={"inactive_file": 32 << 20, "anon": 64 << 20},
        io={VDA: IoStat(rbytes=1 << 20, wbytes=wbytes, rios=4, wios=8), VDB: IoStat()},
        pressure={"cpu": _pressure(0, 0), "memory": _pressure(mem_some, mem_some // 2)},
        limits=Limits(cpu_max=cpu_max or CpuMax(MAX)),
    )


BEFORE = _sample(usage=1_000_000, periods=100, throttled=10, wbytes=1 << 20, mem_some=0)
AFTER = _sample(
    usage=4_000_000,  # +3 s of CPU in 2 s of wall time: 1.5 cores
    periods=120,
    throttled=15,  # 5 of 20 periods throttled
    wbytes=(1 << 20) + (8 << 20),  # +8 MiB: 4 MiB/s
    mem_some=500_000,  # 0.5 s stalled in 2 s: 25 %
    cpu_max=CpuMax(200_000, 100_000),  # 2 cores
)


def test_rates_are_exact() -> None:
    model = build_model(BEFORE, AFTER, DT)
    assert model.interval_seconds == DT
    assert model.cpu_cores == 1.5
    assert model.cpu_user_cores == 1.125
    assert model.cpu_system_cores == 0.375
    assert model.cpu_limit_ratio == 0.75
    assert model.throttled_ratio == 0.25
    assert model.io_write_bytes_per_second == 4 << 20
    assert model.io_read_bytes_per_second == 0.0
    assert model.io_write_ops_per_second == 0.0
    assert model.pressure_memory_some == 0.25
    assert model.pressure_memory_full == 0.125
    assert model.pressure_cpu_some == 0.0
    assert model.pressure_io_some is None  # no io.pressure in either sample


def test_working_set_is_current_minus_inactive_file() -> None:
    assert working_set(AFTER) == 64 << 20
    assert build_model(None, AFTER, None).working_set_bytes == 64 << 20
    assert working_set(replace(AFTER, memory_stat={"inactive_file": 1 << 40})) == 0
    assert working_set(replace(AFTER, memory_current=None)) is None


def test_a_counter_reset_gives_no_rate() -> None:
    """A cgroup removed and re-created under the same path starts its counters again."""
    reborn = _sample(usage=5_000, periods=1, throttled=0, wbytes=0, mem_some=0)
    model = build_model(AFTER, reborn, DT)
    assert model.cpu_cores is None
    assert model.throttled_ratio is None
    assert model.io_write_bytes_per_second is None
    assert model.pressure_memory_some is None
    assert model.working_set_bytes == 64 << 20  # point-in-time figures stay


def test_no_previous_sample_or_no_elapsed_time_gives_no_rates() -> None:
    for model in (build_model(None, AFTER, DT), build_model(BEFORE, AFTER, 0.0)):
        assert model.interval_seconds is None and model.cpu_cores is None
        assert model.working_set_bytes == 64 << 20


def test_no_cpu_controller_gives_usage_but_no_throttling() -> None:
    plain = CpuStat(usage_usec=1_000_000, user_usec=500_000, system_usec=500_000)
    later = CpuStat(usage_usec=2_000_000, user_usec=1_500_000, system_usec=500_000)
    a, b = CgroupSample("x", cpu=plain), CgroupSample("x", cpu=later)
    model = build_model(a, b, DT)
    assert (model.cpu_cores, model.throttled_ratio, model.cpu_limit_ratio) == (0.5, None, None)


def test_snapshot_pairs_samples_by_path() -> None:
    prev = HostSample(wall_time=1000.0, monotonic=50.0, cgroups={"web": BEFORE})
    new = replace(BEFORE, path="new")
    cur = HostSample(wall_time=1002.0, monotonic=52.0, cgroups={"web": AFTER, "new": new})
    names = {p: CgroupName(p, "cgroup", p) for p in cur.cgroups}
    snap = build_snapshot(prev, cur, seq=7, names=names, collect_seconds=0.01)
    assert snap.seq == 7 and snap.sample is cur and snap.names is names
    assert snap.models["web"].cpu_cores == 1.5
    assert snap.models["new"].cpu_cores is None  # no earlier sample of that cgroup
    first = build_snapshot(None, cur, seq=1, names=names, collect_seconds=0.0)
    assert all(m.interval_seconds is None for m in first.models.values())
