"""VPA-style recommendations: lower bound, target and upper bound of memory and CPU per cgroup.

A port of the Kubernetes Vertical Pod Autoscaler's recommender (kubernetes/autoscaler,
vertical-pod-autoscaler/pkg/recommender):

- util/histogram_options.go: exponential buckets, each 5% wider than the one before; CPU from
  0.001 core (max 1000 cores), memory from 1e7 bytes (max 1e12); epsilon 1e-4.
- util/histogram.go: Percentile() returns the END of the bucket where the cumulative weight
  reaches the percentile (the start of the last bucket if it is that one).
- util/decaying_histogram.go: a sample's weight is multiplied by 2^((t - ref) / half_life), so
  it halves with each half-life relative to newer ones; ``ref`` moves forward (and the weights
  are scaled down) when the exponent would pass 100.
- model/aggregations_config.go: half-lives 24 h; memory peaks per 24 h interval; OOM bump
  x1.2 and at least +100 MiB (written there as 100 * 1024 * 1024).
- model/container.go: one memory sample per aggregation interval, the interval's peak (a
  higher sample replaces the interval's previous peak); an OOM adds max(request, peak) bumped.
- model/aggregate_container_state.go: a CPU sample weighs max(request in cores, 0.1).
- logic/recommender.go + estimator.go: target p90, lower p50, upper p95 (memory and CPU), each
  +15%; confidence = min(history length in days, samples / 1440); upper x (1 + 1/confidence),
  lower x (1 + 0.001/confidence)^-2; then at least 25 mCPU and 250 MiB.

Here the samples are corral's: working_set_bytes (memory.current - inactive_file, as the
kubelet reports it to VPA) and cpu_cores (cpu.stat usage_usec per second) from each Snapshot;
an OOM is memory.events ``oom_kill`` going up; the "request" is the cgroup's limit
(memory.max, cpu.max) when it has one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal

from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot
from runtime.cgroupfs.formats import MAX

MIB = 1024 * 1024
MAX_DECAY_EXPONENT = 100  # decaying_histogram.go maxDecayExponent
MIN_SAMPLE_WEIGHT = 0.1  # aggregations_config.go minSampleWeight
EPSILON = 0.001 * MIN_SAMPLE_WEIGHT


@dataclass(frozen=True, slots=True)
class HistogramOptions:
    """NewExponentialHistogramOptions: bucket n >= 1 starts at first * (r^n - 1) / (r - 1)."""

    max_value: float
    first_bucket_size: float
    ratio: float = 1.05
    epsilon: float = EPSILON
    num_buckets: int = field(init=False)

    def __post_init__(self) -> None:
        if self.max_value <= 0 or self.first_bucket_size <= 0 or self.ratio <= 1:
            raise ValueError(
                f"histogram options {self.max_value}, {self.first_bucket_size}, "
                f"{self.ratio}: max and first bucket must be > 0, ratio > 1"
            )
        r, first = self.ratio, self.first_bucket_size
        count = math.ceil(math.log(self.max_value * (r - 1) / first + 1, r)) + 1
        object.__setattr__(self, "num_buckets", count)

    def find_bucket(self, value: float) -> int:
        if value < self.first_bucket_size:
            return 0
        r = self.ratio
        bucket = int(math.log(value * (r - 1) / self.first_bucket_size + 1, r))
        return min(bucket, self.num_buckets - 1)

    def bucket_start(self, bucket: int) -> float:
        if bucket == 0:
            return 0.0
        return self.first_bucket_size * (self.ratio**bucket - 1) / (self.ratio - 1)


CPU_OPTIONS = HistogramOptions(max_value=1000.0, first_bucket_size=0.001)  # cores
MEMORY_OPTIONS = HistogramOptions(max_value=1e12, first_bucket_size=1e7)  # bytes


class DecayingHistogram:
    """VPA's decaying histogram: weights grow 2x per half-life of sample time, so older
    samples count half as much as ones a half-life newer. Times are seconds."""

    def __init__(self, options: HistogramOptions, half_life_seconds: float) -> None:
        if half_life_seconds <= 0:
            raise ValueError(f"half_life_seconds {half_life_seconds}: expected > 0")
        self.options = options
        self.half_life = half_life_seconds
        self.reference: float | None = None
        self.weights = [0.0] * options.num_buckets
        self.total_weight = 0.0

    def _decay(self, time: float) -> float:
        if self.reference is None:
            self.reference = round(time / self.half_life) * self.half_life
        if time > self.reference + self.half_life * MAX_DECAY_EXPONENT:
            self._shift(time)
        return float(2.0 ** ((time - self.reference) / self.half_life))

    def _shift(self, time: float) -> None:
        assert self.reference is not None
        new_reference = round(time / self.half_life) * self.half_life
        factor = 2.0 ** round((self.reference - new_reference) / self.half_life)
        self.weights = [w * factor for w in self.weights]
        self.total_weight *= factor
        self.reference = new_reference

    def add(self, value: float, weight: float, time: float) -> None:
        if weight < 0:
            raise ValueError(f"sample weight {weight}: expected >= 0")
        w = weight * self._decay(time)
        self.weights[self.options.find_bucket(value)] += w
        self.total_weight += w

    def subtract(self, value: float, weight: float, time: float) -> None:
        bucket = self.options.find_bucket(value)
        w = weight * self._decay(time)
        if w > self.weights[bucket] - self.options.epsilon:
            w = self.weights[bucket]
        self.weights[bucket] -= w
        self.total_weight -= w

    def is_empty(self) -> bool:
        return all(w < self.options.epsilon for w in self.weights)

    def percentile(self, p: float) -> float:
        """The end of the bucket where the cumulative weight reaches p * total (histogram.go);
        0.0 when empty."""
        live = [i for i, w in enumerate(self.weights) if w >= self.options.epsilon]
        if not live:
            return 0.0
        threshold, partial = p * self.total_weight, 0.0
        bucket = live[0]
        for bucket in range(live[0], live[-1] + 1):
            partial += self.weights[bucket]
            if partial >= threshold:
                break
        if bucket < self.options.num_buckets - 1:
            return self.options.bucket_start(bucket + 1)
        return self.options.bucket_start(bucket)

    def max_value(self) -> float:
        """The end of the highest non-empty bucket (Autopilot's peak over the decayed window)."""
        return self.percentile(1.0)


@dataclass(frozen=True, slots=True)
class VpaConfig:
    """The recommender's flags and aggregation constants, at their upstream defaults."""

    cpu_half_life_seconds: float = 86400.0
    memory_half_life_seconds: float = 86400.0
    memory_aggregation_seconds: float = 86400.0
    margin_fraction: float = 0.15
    min_cpu_cores: float = 0.025
    min_memory_bytes: float = 250 * MIB
    target_percentile: float = 0.9
    lower_percentile: float = 0.5
    upper_percentile: float = 0.95
    oom_bump_ratio: float = 1.2
    oom_min_bump_bytes: float = 100 * MIB


@dataclass(frozen=True, slots=True)
class Recommendation:
    """lower/target/upper for one resource of one cgroup: "memory" in bytes, "cpu" in cores.
    ``upper`` is inf with no history span yet (VPA's confidence multiplier)."""

    cgroup: str
    resource: Literal["memory", "cpu"]
    lower: float
    target: float
    upper: float
    unit: str


@dataclass(slots=True)
class _State:
    """ContainerState + AggregateContainerState for one cgroup."""

    cpu: DecayingHistogram
    memory: DecayingHistogram
    first: float | None = None
    last: float | None = None
    samples: int = 0
    memory_peak: float = 0.0
    oom_peak: float = 0.0
    window_end: float | None = None
    oom_kills: int | None = None


class Recommender:
    """Feed Snapshots oldest first with ``observe``; ask ``recommend`` at any time."""

    def __init__(self, config: VpaConfig | None = None) -> None:
        self.config = config or VpaConfig()
        self._states: dict[str, _State] = {}

    def _state(self, path: str) -> _State:
        state = self._states.get(path)
        if state is None:
            c = self.config
            state = _State(
                DecayingHistogram(CPU_OPTIONS, c.cpu_half_life_seconds),
                DecayingHistogram(MEMORY_OPTIONS, c.memory_half_life_seconds),
            )
            self._states[path] = state
        return state

    def observe(self, snapshot: Snapshot, cgroups: Collection[str] | None = None) -> None:
        t = snapshot.sample.wall_time
        for path, sample in snapshot.sample.cgroups.items():
            if cgroups is not None and path not in cgroups:
                continue
            model = snapshot.models[path]
            state = self._state(path)
            if model.cpu_cores is not None:
                self._add_cpu(state, t, model.cpu_cores, _cpu_request(sample))
            if model.working_set_bytes is not None:
                self._add_memory(state, t, float(model.working_set_bytes), oom=False)
            self._check_oom(state, t, sample)

    def _add_cpu(self, state: _State, t: float, cores: float, request: float) -> None:
        state.cpu.add(cores, max(request, MIN_SAMPLE_WEIGHT), t)
        state.first = t if state.first is None else min(state.first, t)
        state.last = t if state.last is None else max(state.last, t)
        state.samples += 1

    def _add_memory(self, state: _State, t: float, usage: float, *, oom: bool) -> None:
        """container.go addMemorySample: one peak per aggregation interval."""
        interval = self.config.memory_aggregation_seconds
        if state.window_end is None:
            state.window_end = t
        add = False
        if t < state.window_end:
            old = max(state.memory_peak, state.oom_peak)
            if old != 0 and usage > old:
                state.memory.subtract(old, 1.0, state.window_end)
                add = True
        else:
            shift = (t - state.window_end) // interval * interval + interval
            state.window_end += shift
            state.memory_peak = state.oom_peak = 0.0
            add = True
        if add:
            state.memory.add(usage, 1.0, state.window_end)
            if oom:
                state.oom_peak = usage
            else:
                state.memory_peak = usage

    def _check_oom(self, state: _State, t: float, sample: CgroupSample) -> None:
        """An oom_kill since the last sample adds max(request, peak) bumped (RecordOOM)."""
        events = sample.memory_events
        if events is None:
            return
        before, state.oom_kills = state.oom_kills, events.oom_kill
        if before is None or events.oom_kill <= before:
            return
        limit = sample.limits.memory_max
        request = float(limit) if isinstance(limit, int) else 0.0
        used = max(request, state.memory_peak)
        c = self.config
        needed = max(used + c.oom_min_bump_bytes, used * c.oom_bump_ratio)
        self._add_memory(state, t, needed, oom=True)

    def recommend(self, cgroups: Collection[str] | None = None) -> list[Recommendation]:
        out: list[Recommendation] = []
        for path in sorted(self._states):
            if cgroups is not None and path not in cgroups:
                continue
            state = self._states[path]
            if not state.memory.is_empty():
                out.append(self._estimate(path, state, "memory"))
            if not state.cpu.is_empty():
                out.append(self._estimate(path, state, "cpu"))
        return out

    def _estimate(
        self, path: str, state: _State, resource: Literal["memory", "cpu"]
    ) -> Recommendation:
        c = self.config
        hist = state.memory if resource == "memory" else state.cpu
        floor = c.min_memory_bytes if resource == "memory" else c.min_cpu_cores
        conf = self.confidence(path)
        margin = 1.0 + c.margin_fraction
        target = hist.percentile(c.target_percentile) * margin
        lower = hist.percentile(c.lower_percentile) * margin
        upper = hist.percentile(c.upper_percentile) * margin
        lower *= (1.0 + 0.001 / conf) ** -2.0 if conf > 0 else 0.0
        upper = upper * (1.0 + 1.0 / conf) if conf > 0 else math.inf
        unit = "bytes" if resource == "memory" else "cores"
        return Recommendation(
            path, resource, max(lower, floor), max(target, floor), max(upper, floor), unit
        )

    def confidence(self, path: str) -> float:
        """estimator.go getConfidence: min(history span in days, samples / (60 * 24))."""
        state = self._states[path]
        if state.first is None or state.last is None:
            return 0.0
        return min((state.last - state.first) / 86400.0, state.samples / 1440.0)

    def target(self, path: str, resource: Literal["memory", "cpu"]) -> float | None:
        """The target alone (the VPA baseline applies it as the limit)."""
        state = self._states.get(path)
        if state is None:
            return None
        hist = state.memory if resource == "memory" else state.cpu
        if hist.is_empty():
            return None
        return self._estimate(path, state, resource).target


def _cpu_request(sample: CgroupSample) -> float:
    cpu_max = sample.limits.cpu_max
    if cpu_max is None or cpu_max.quota is MAX:
        return 0.0
    return cpu_max.cores or 0.0


def recommend(
    history: Iterable[Snapshot],
    *,
    half_life_seconds: float = 86400.0,
    cgroups: Collection[str] | None = None,
    config: VpaConfig | None = None,
) -> list[Recommendation]:
    """VPA's lower/target/upper for memory and CPU of each cgroup in ``history`` (oldest
    first), or of ``cgroups`` only. ``half_life_seconds`` sets both histograms' half-life
    unless ``config`` is given."""
    if config is None:
        config = VpaConfig(
            cpu_half_life_seconds=half_life_seconds, memory_half_life_seconds=half_life_seconds
        )
    rec = Recommender(config)
    for snapshot in history:
        rec.observe(snapshot, cgroups)
    return rec.recommend(cgroups)
