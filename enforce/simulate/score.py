"""Scoring one simulated run: slack, OOM kills, throttled time, limit changes, reaction time.

- slack: (limit - usage) / limit averaged over ticks and cgroups, per resource; memory's
  limit is min(memory.high, memory.max) and its usage memory.current (what the kernel
  charges; zero while an OOM-killed workload restarts); CPU's limit is cpu.max in cores and
  its usage what ran. Ticks with no limit (``max``) do not count: there is nothing to waste.
- reaction time: from the start of the tick in which a cgroup came under pressure (memory:
  stalled >= 1% of the tick, or OOM-killed until it has restarted; CPU: throttled) to the
  first applied raise of that resource's limit (memory.high/memory.max up, cpu.max up). An
  episode with no raise before the pressure ends is counted as unanswered.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from enforce.actions import Value
from enforce.simulate.kernel_model import TickResult
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX

MEMORY_STALL_ONSET = 0.01
MEMORY_FILES = ("memory.high", "memory.max")


@dataclass(frozen=True, slots=True)
class Score:
    """One policy's figures on one trace."""

    policy: str
    trace: str
    memory_slack: float | None
    cpu_slack: float | None
    oom_kills: int
    throttled_seconds: float
    limit_changes: int
    reaction_seconds: float | None  # median over answered episodes
    episodes: int
    answered: int
    fork_failures: int
    kills: int  # by the policy (cgroup.kill)
    refusals: int
    ticks: int
    changes_by_file: Mapping[str, int] = field(default_factory=dict)

    @property
    def slack(self) -> float | None:
        """The mean of the memory and CPU slack that exist."""
        known = [s for s in (self.memory_slack, self.cpu_slack) if s is not None]
        return sum(known) / len(known) if known else None


@dataclass(slots=True)
class _Episode:
    start: int
    answered: int | None = None


@dataclass(slots=True)
class Meter:
    """Accumulates a run tick by tick."""

    dt: float
    mem_slack: list[float] = field(default_factory=list)
    cpu_slack: list[float] = field(default_factory=list)
    oom_kills: int = 0
    throttled: float = 0.0
    changes: int = 0
    by_file: dict[str, int] = field(default_factory=dict)
    fork_failures: int = 0
    kills: int = 0
    refusals: int = 0
    ticks: int = 0
    open: dict[tuple[str, str], _Episode] = field(default_factory=dict)
    done: list[_Episode] = field(default_factory=list)

    def tick(
        self, tick: int, results: Mapping[str, TickResult], current: Mapping[str, int]
    ) -> None:
        """Score a tick's kernel response; ``current`` is memory.current per cgroup."""
        self.ticks = tick + 1
        for cgroup, r in results.items():
            self.oom_kills += r.oom_kill
            self.kills += r.killed
            self.throttled += r.throttled_seconds
            self.fork_failures += r.fork_failures
            if r.memory_limit != math.inf:
                used = min(current.get(cgroup, 0), r.memory_limit)
                self.mem_slack.append((r.memory_limit - used) / r.memory_limit)
            if r.cpu_limit != math.inf:
                self.cpu_slack.append((r.cpu_limit - min(r.cpu_used, r.cpu_limit)) / r.cpu_limit)
            memory = r.oom_kill or r.down or r.memory_stall >= MEMORY_STALL_ONSET
            self._pressure(tick, (cgroup, "memory"), memory)
            self._pressure(tick, (cgroup, "cpu"), r.throttled_seconds > 0)

    def _pressure(self, tick: int, key: tuple[str, str], now: bool) -> None:
        episode = self.open.get(key)
        if now and episode is None:
            self.open[key] = _Episode(tick)
        elif not now and episode is not None:
            self.done.append(self.open.pop(key))

    def write(self, tick: int, cgroup: str, file: str, old: Value | None, new: Value) -> None:
        """An applied write after ``tick``'s snapshot (in force from the next tick)."""
        if old == new or file in ("cgroup.kill", "cgroup.freeze"):
            return
        self.changes += 1
        self.by_file[file] = self.by_file.get(file, 0) + 1
        resource = "memory" if file in MEMORY_FILES else "cpu" if file == "cpu.max" else None
        if resource is None or not _raised(old, new):
            return
        episode = self.open.get((cgroup, resource))
        if episode is not None and episode.answered is None:
            episode.answered = tick
            self.done.append(self.open.pop((cgroup, resource)))

    def score(self, policy: str, trace: str) -> Score:
        episodes = self.done + list(self.open.values())
        delays = [(e.answered - e.start + 1) * self.dt for e in episodes if e.answered is not None]
        return Score(
            policy=policy,
            trace=trace,
            memory_slack=_mean(self.mem_slack),
            cpu_slack=_mean(self.cpu_slack),
            oom_kills=self.oom_kills,
            throttled_seconds=round(self.throttled, 3),
            limit_changes=self.changes,
            reaction_seconds=statistics.median(delays) if delays else None,
            episodes=len(episodes),
            answered=len(delays),
            fork_failures=self.fork_failures,
            kills=self.kills,
            refusals=self.refusals,
            ticks=self.ticks,
            changes_by_file=dict(sorted(self.by_file.items())),
        )


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _size(value: Value | None) -> float:
    if value is None or value is MAX:
        return math.inf
    if isinstance(value, CpuMax):
        return value.cores if value.cores is not None else math.inf
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int) else math.inf


def _raised(old: Value | None, new: Value) -> bool:
    return _size(new) > _size(old)
