"""The baselines corral's policy is compared with, each from its published algorithm, each
driving the kernel model's limits directly (memory.max and cpu.max, as they set limits):

- ``FixedLimits``: the limits a person declared (the trace's), never changed. Autopilot's
  paper measured 46% slack for such manually set limits.
- ``VpaBaseline``: the Kubernetes VPA recommender (enforce.recommend, a port of
  kubernetes/autoscaler vertical-pod-autoscaler/pkg/recommender) fed every snapshot; every
  ``update_seconds`` (the updater's default --updater-interval=1m) its target becomes the
  limit when it differs. An OOM kill enters the histogram bumped (x1.2, >= +100 MiB), so the
  next update raises the limit. Simplification: the updater's eviction test (request outside
  [lower, upper]) is replaced by applying the target, as an in-place resize would.
- ``AutopilotBaseline``: Autopilot's moving-window recommenders (Rzadca et al., "Autopilot:
  workload autoscaling at Google", EuroSys 2020, section 3.2): usage aggregated per 5-minute
  window (memory as memory.current: Borg charges a task's whole memcg, page cache too);
  memory limit = S_max, the peak over the decayed history (half-life 48 h); CPU limit =
  S_p95, the 95th percentile of the decayed usage histogram (half-life 12 h), both in 5%
  buckets; recomputed at each window's end. Upscaling is not delayed: after an OOM kill the
  limit is recomputed at once, from the peak, which then includes the usage at the kill:
  the limit, whose 5% bucket ends above it (usage above a limit cannot be seen).
  The paper's ML recommender is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from enforce.actions import Value
from enforce.recommend import (
    CPU_OPTIONS,
    MEMORY_OPTIONS,
    DecayingHistogram,
    Recommender,
    VpaConfig,
)
from enforce.simulate.kernel_model import PAGE
from monitor.snapshot import Snapshot
from runtime.cgroupfs.cpu import QUOTA_MIN_US, CpuMax

Write = tuple[str, str, Value]  # (cgroup, file, value)


class Baseline(Protocol):
    name: str

    def decide(self, snapshot: Snapshot, cgroups: Collection[str]) -> Sequence[Write]:
        """Limits of ``cgroups`` (the workloads) to write after this snapshot (applied
        before the next tick)."""
        ...


def _cpu_limit(cores: float, current: CpuMax | None) -> CpuMax:
    period = current.period if current is not None else 100_000
    return CpuMax(max(round(cores * period), QUOTA_MIN_US), period)


def _pages(size: float) -> int:
    """A memory limit in whole pages, rounded up (the kernel would round a write down)."""
    return math.ceil(size / PAGE) * PAGE


def _changed(snapshot: Snapshot, cgroup: str, file: str, value: Value) -> bool:
    limits = snapshot.sample.cgroups[cgroup].limits
    old = limits.memory_max if file == "memory.max" else limits.cpu_max
    return old != value


class FixedLimits:
    """The declared limits, left alone."""

    name = "fixed"

    def decide(self, snapshot: Snapshot, cgroups: Collection[str]) -> Sequence[Write]:
        return ()


class VpaBaseline:
    """VPA's target applied as memory.max and cpu.max every update interval."""

    name = "vpa"

    def __init__(self, update_seconds: float = 60.0, config: VpaConfig | None = None) -> None:
        self.update_seconds = update_seconds
        self.recommender = Recommender(config)
        self._next: float | None = None

    def decide(self, snapshot: Snapshot, cgroups: Collection[str]) -> Sequence[Write]:
        self.recommender.observe(snapshot, cgroups)
        now = snapshot.sample.monotonic
        if self._next is None:
            self._next = now + self.update_seconds
        if now < self._next:
            return ()
        self._next += self.update_seconds
        writes: list[Write] = []
        for cgroup in cgroups:
            sample = snapshot.sample.cgroups[cgroup]
            memory = self.recommender.target(cgroup, "memory")
            cpu = self.recommender.target(cgroup, "cpu")
            if memory is not None:
                writes.append((cgroup, "memory.max", _pages(memory)))
            if cpu is not None:
                writes.append((cgroup, "cpu.max", _cpu_limit(cpu, sample.limits.cpu_max)))
        return [w for w in writes if _changed(snapshot, *w)]


class _Window:
    """One cgroup's decayed histograms."""

    def __init__(self, cpu_half_life: float, memory_half_life: float) -> None:
        self.cpu = DecayingHistogram(CPU_OPTIONS, cpu_half_life)
        self.memory = DecayingHistogram(MEMORY_OPTIONS, memory_half_life)
        self.window_peak = 0.0
        self.oom_kills: int | None = None


class AutopilotBaseline:
    """Autopilot's moving window: S_max for memory, S_p95 for CPU, per 5-minute window."""

    name = "autopilot"

    def __init__(
        self,
        window_seconds: float = 300.0,
        cpu_half_life_seconds: float = 12 * 3600.0,
        memory_half_life_seconds: float = 48 * 3600.0,
        cpu_percentile: float = 0.95,
    ) -> None:
        self.window_seconds = window_seconds
        self.cpu_half_life = cpu_half_life_seconds
        self.memory_half_life = memory_half_life_seconds
        self.cpu_percentile = cpu_percentile
        self._state: dict[str, _Window] = {}
        self._window_end: float | None = None

    def decide(self, snapshot: Snapshot, cgroups: Collection[str]) -> Sequence[Write]:
        now = snapshot.sample.monotonic
        if self._window_end is None:
            self._window_end = now + self.window_seconds
        oom = self._observe(snapshot, cgroups)
        closing = now >= self._window_end
        if closing:
            self._window_end += self.window_seconds
        writes: list[Write] = []
        for cgroup, state in self._state.items():
            if closing or cgroup in oom:
                writes.extend(self._recommend(snapshot, cgroup, state, now))
        return [w for w in writes if _changed(snapshot, *w)]

    def _observe(self, snapshot: Snapshot, cgroups: Collection[str]) -> set[str]:
        """Add this tick's usage; returns the cgroups OOM-killed since the last tick."""
        oom: set[str] = set()
        for cgroup in cgroups:
            sample = snapshot.sample.cgroups[cgroup]
            state = self._state.get(cgroup)
            if state is None:
                state = self._state[cgroup] = _Window(self.cpu_half_life, self.memory_half_life)
            model = snapshot.models[cgroup]
            t = snapshot.sample.monotonic
            if model.cpu_cores is not None:
                state.cpu.add(model.cpu_cores, 1.0, t)
            used = sample.memory_current or 0
            state.window_peak = max(state.window_peak, float(used))
            kills = sample.memory_events.oom_kill if sample.memory_events else 0
            if state.oom_kills is not None and kills > state.oom_kills:
                oom.add(cgroup)
                # At the kill usage had reached the limit: that is the peak Borg records.
                limit = sample.limits.memory_max
                if isinstance(limit, int):
                    state.window_peak = max(state.window_peak, float(limit))
            state.oom_kills = kills
        return oom

    def _recommend(self, snapshot: Snapshot, cgroup: str, state: _Window, t: float) -> list[Write]:
        writes: list[Write] = []
        if state.window_peak > 0:
            state.memory.add(state.window_peak, 1.0, t)
            state.window_peak = 0.0
        if not state.memory.is_empty():
            writes.append((cgroup, "memory.max", _pages(state.memory.max_value())))
        if not state.cpu.is_empty():
            cores = state.cpu.percentile(self.cpu_percentile)
            limits = snapshot.sample.cgroups[cgroup].limits
            writes.append((cgroup, "cpu.max", _cpu_limit(cores, limits.cpu_max)))
        return writes


BASELINES: dict[str, Callable[[], Baseline]] = {
    "fixed": FixedLimits,
    "vpa": VpaBaseline,
    "autopilot": AutopilotBaseline,
}
