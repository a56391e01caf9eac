"""enforce.recommend: VPA's histograms and estimators against hand-computed values.

Bucket arithmetic (vertical-pod-autoscaler/pkg/recommender/util/histogram_options.go):
bucket(v) = floor(log_r(v * (r - 1) / first + 1)), start(n) = first * (r^n - 1) / (r - 1),
r = 1.05. For CPU (first = 0.001 core): 1.0 core -> bucket floor(ln 51 / ln 1.05) =
floor(80.59) = 80, which ends at 0.02 * (1.05^81 - 1) = 1.02079; 0.5 core -> bucket 66,
ending at 0.50567; 2.0 cores -> bucket 94, ending at 2.04069. For memory (first = 1e7 B):
500 MiB = 524288000 B -> bucket floor(ln(2.6214 + 1) / ln 1.05) = 26, ending at 546691264.
"""

from __future__ import annotations

import math

import pytest

from enforce.recommend import (
    CPU_OPTIONS,
    MEMORY_OPTIONS,
    DecayingHistogram,
    HistogramOptions,
    Recommender,
    VpaConfig,
    recommend,
)
from enforce.simulate.kernel_model import KernelModel
from enforce.simulate.traces import Trace, Workload
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX

MIB = 1 << 20
DAY = 86400.0
END_1_CORE = 1.020790262
END_HALF_CORE = 0.505669807
END_2_CORES = 2.040693529
END_500_MIB = 546691264.47


def test_bucket_counts_match_upstream_formula() -> None:
    # numBuckets = ceil(log_r(max * (r - 1) / first + 1)) + 1
    assert CPU_OPTIONS.num_buckets == math.ceil(math.log(1000 * 0.05 / 0.001 + 1, 1.05)) + 1
    assert CPU_OPTIONS.num_buckets == 223
    assert MEMORY_OPTIONS.num_buckets == 176


@pytest.mark.parametrize(
    ("value", "bucket", "end"),
    [(1.0, 80, END_1_CORE), (0.5, 66, END_HALF_CORE), (2.0, 94, END_2_CORES), (0.0005, 0, 0.001)],
)
def test_cpu_buckets(value: float, bucket: int, end: float) -> None:
    assert CPU_OPTIONS.find_bucket(value) == bucket
    assert CPU_OPTIONS.bucket_start(bucket + 1) == pytest.approx(end)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="ratio > 1"):
        HistogramOptions(max_value=10.0, first_bucket_size=1.0, ratio=1.0)


def test_percentile_is_the_end_of_the_bucket_reaching_it() -> None:
    h = DecayingHistogram(CPU_OPTIONS, DAY)
    for value, weight in ((0.5, 3.0), (1.0, 1.0), (2.0, 1.0)):
        h.add(value, weight, 0.0)
    # total 5: 0.5 holds 60%, 1.0 the next 20%, 2.0 the last 20%.
    assert h.percentile(0.5) == pytest.approx(END_HALF_CORE)
    assert h.percentile(0.6) == pytest.approx(END_HALF_CORE)
    assert h.percentile(0.7) == pytest.approx(END_1_CORE)
    assert h.percentile(0.9) == pytest.approx(END_2_CORES)
    assert h.max_value() == pytest.approx(END_2_CORES)


def test_empty_histogram_percentile_is_zero() -> None:
    assert DecayingHistogram(MEMORY_OPTIONS, DAY).percentile(0.9) == 0.0


def test_a_sample_a_half_life_older_weighs_half() -> None:
    h = DecayingHistogram(CPU_OPTIONS, DAY)
    h.add(0.5, 1.0, 0.0)
    h.add(2.0, 1.0, DAY)  # weight 2 relative to the first
    assert h.percentile(0.33) == pytest.approx(END_HALF_CORE)  # threshold 0.99 <= 1
    assert h.percentile(0.34) == pytest.approx(END_2_CORES)  # threshold 1.02 > 1


def test_reference_shift_keeps_weights_finite_and_relative() -> None:
    h = DecayingHistogram(CPU_OPTIONS, 1.0)
    h.add(0.5, 1.0, 0.0)
    h.add(2.0, 1.0, 150.0)  # past 2^100: the reference moves forward, old weights scale down
    assert math.isfinite(h.total_weight)
    assert h.reference == 150.0
    assert h.percentile(0.01) == pytest.approx(END_2_CORES)  # the old sample decayed away


def test_subtract_removes_a_sample() -> None:
    h = DecayingHistogram(MEMORY_OPTIONS, DAY)
    h.add(500 * MIB, 1.0, 10.0)
    h.add(100 * MIB, 1.0, 10.0)
    h.subtract(500 * MIB, 1.0, 10.0)
    assert h.max_value() < 500 * MIB


def _steady(ws: int, cores: float, ticks: int, memory_max: int | None = None) -> Trace:
    w = Workload(
        cgroup="corral/app",
        working_set=(ws,) * ticks,
        cache=(0,) * ticks,
        cpu=(cores,) * ticks,
        pids=(10,) * ticks,
        io_read=(0.0,) * ticks,
        io_write=(0.0,) * ticks,
        memory_max=MAX if memory_max is None else memory_max,
        cpu_max=CpuMax(MAX),
    )
    return Trace("steady", 1.0, (w,))


def _history(trace: Trace) -> list:  # type: ignore[type-arg]
    model = KernelModel(trace)
    return [model.step(t)[0] for t in range(trace.ticks)]


def test_recommend_steady_workload_target_is_bucket_end_plus_margin() -> None:
    recs = {r.resource: r for r in recommend(_history(_steady(500 * MIB, 1.0, 3600)))}
    mem, cpu = recs["memory"], recs["cpu"]
    assert mem.cgroup == "corral/app" and mem.unit == "bytes" and cpu.unit == "cores"
    assert mem.target == pytest.approx(END_500_MIB * 1.15)
    assert cpu.target == pytest.approx(END_1_CORE * 1.15)
    # An hour of history: confidence = min(1/24 day, 3599 samples / 1440) = 1/24 (nearly),
    # so upper = p95 * 1.15 * (1 + 24) and lower = p50 * 1.15 * (1 + 0.024)^-2.
    span = 3598 / DAY  # CPU samples start at the second snapshot (a rate needs two)
    assert cpu.upper == pytest.approx(END_1_CORE * 1.15 * (1 + 1 / span))
    assert cpu.lower == pytest.approx(END_1_CORE * 1.15 * (1 + 0.001 / span) ** -2)


def test_recommend_applies_vpa_minimums() -> None:
    recs = {r.resource: r for r in recommend(_history(_steady(20 * MIB, 0.001, 100)))}
    assert recs["memory"].target == 250 * MIB
    assert recs["cpu"].target == pytest.approx(0.025)


def test_upper_bound_is_infinite_without_history_span() -> None:
    recs = recommend(_history(_steady(500 * MIB, 1.0, 1)), cgroups={"corral/app"})
    assert [r.resource for r in recs] == ["memory"]  # no CPU rate from one snapshot
    assert recs[0].upper == math.inf


def test_oom_kill_bumps_memory_by_20pct_or_100mib() -> None:
    # 300 MiB in use, then memory.max lowered to 200 MiB: OOM-killed on the next tick.
    model = KernelModel(_steady(300 * MIB, 0.5, 20, memory_max=1 << 30))
    rec = Recommender()
    for t in range(20):
        if t == 5:
            model.write("corral/app", "memory.max", 200 * MIB)
        snap = model.step(t)[0]
        rec.observe(snap, {"corral/app"})
    events = snap.sample.cgroups["corral/app"].memory_events
    assert events is not None and events.oom_kill >= 1
    # RecordOOM: used = max(request 200 MiB, interval peak 300 MiB); needed =
    # max(used + 100 MiB, used * 1.2) = 400 MiB, which replaces the interval's peak.
    end = MEMORY_OPTIONS.bucket_start(MEMORY_OPTIONS.find_bucket(400 * MIB) + 1)
    assert rec.target("corral/app", "memory") == pytest.approx(end * 1.15)


def test_a_first_peak_of_zero_hides_later_samples_as_upstream() -> None:
    # container.go only replaces a non-zero interval peak; a cgroup first seen empty keeps
    # its 0 peak for the interval (the port keeps the quirk, so figures match upstream).
    rec = Recommender()
    for snap in _history(_steady(300 * MIB, 0.5, 15, memory_max=200 * MIB)):
        rec.observe(snap, {"corral/app"})
    assert rec.target("corral/app", "memory") == 250 * MIB  # the minimum


def test_half_life_parameter_reaches_both_histograms() -> None:
    rec = Recommender(VpaConfig(cpu_half_life_seconds=60.0, memory_half_life_seconds=60.0))
    trace = _steady(500 * MIB, 1.0, 10)
    for snap in _history(trace):
        rec.observe(snap)
    assert rec._states["corral/app"].cpu.half_life == 60.0
    assert recommend([], half_life_seconds=5.0) == []
