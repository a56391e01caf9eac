"""A model of how cgroup v2 answers a workload's demand under given limits, one tick at a
time, producing the same HostSample/Snapshot the collector reads from the real kernel.

The responses (Documentation/admin-guide/cgroup-v2.rst, accounting/psi.rst):

- memory.max: usage above it is reclaimed (page cache first); when the working set alone is
  above it the OOM killer runs: memory.events ``max``, ``oom`` and ``oom_kill`` count up, the
  workload dies and restarts after ``restart_ticks`` (losing that work).
- memory.high: usage above it is reclaimed and the allocating tasks are throttled, never
  killed; memory.current is held at high; memory.events ``high`` counts up. Reclaiming cold
  cache costs little stall (refaults); squeezing the working set stalls the tasks, which shows
  in memory.pressure ``some``/``full`` totals and slows the workload's progress (CPU).
- cpu.max: each period the cgroup may run QUOTA us; demand above it is throttled: cpu.stat
  nr_periods, nr_throttled and throttled_usec count up, usage is capped at the quota, and the
  waiting shows in cpu.pressure ``some``.
- pids.max: forks beyond it fail with EAGAIN; pids.events ``max`` counts each failure.
- io.max: reads/writes above rbps/wbps wait; io.pressure ``some`` shows the wait.
- cgroup.freeze stops the tasks; cgroup.kill kills them all (the workload restarts).

PSI avg10/60/300 are exponentially decayed averages of the stall percentage, as the kernel
computes them every 2 s (psi.c calc_avgs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from enforce.actions import IoLimit, Value
from enforce.simulate.parents import ancestors, parent_sample, parent_shares
from enforce.simulate.psi import Psi
from enforce.simulate.traces import Trace, Workload
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName, Snapshot, build_snapshot
from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX, IntOrMax
from runtime.cgroupfs.io import Device, IoMax, IoStat
from runtime.cgroupfs.memory import MemoryEvents
from runtime.cgroupfs.pids import PidsEvents

DEVICE = Device(8, 0)
PAGE = 4096
CACHE_REFAULT_STALL = 0.02  # stall share when all cache is evicted (grows with its square)
HOT_STALL_BASE = 0.2  # stall share as soon as the working set is above memory.high
HOT_STALL_SLOPE = 4.0  # more per fraction of the working set above high
FULL_SHARE = 0.5  # full stall as a share of some (single-workload cgroups)
START_WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a fixed date for deterministic output
LIMIT_FILES = frozenset(
    {"memory.high", "memory.max", "memory.low", "memory.min", "memory.swap.max"}
    | {"pids.max", "cpu.max", "cpu.weight", "io.max"}
)


_MEM_EVENTS = ("low", "high", "max", "oom", "oom_kill")


def _cap(limit: IntOrMax | None) -> float:
    return math.inf if limit is None or limit is MAX else float(limit)


@dataclass(slots=True)
class TickResult:
    """What happened to one workload in one tick (the simulator's scoring reads this)."""

    working_set: float = 0.0  # demanded (bytes)
    memory_limit: float = math.inf  # min(memory.high, memory.max) in force
    cpu_demand: float = 0.0  # cores demanded
    cpu_used: float = 0.0
    cpu_limit: float = math.inf  # cores
    throttled_seconds: float = 0.0
    memory_stall: float = 0.0  # share of the tick stalled ("some")
    oom_kill: bool = False
    killed: bool = False  # by cgroup.kill
    fork_failures: int = 0
    down: bool = False  # restarting after a kill


@dataclass(slots=True)
class CgroupState:
    """One cgroup's limits and cumulative counters (floats; the sample rounds them)."""

    workload: Workload
    memory_max: IntOrMax = MAX
    memory_high: IntOrMax = MAX
    memory_low: IntOrMax = 0
    memory_min: IntOrMax = 0
    swap_max: IntOrMax = 0
    cpu_max: CpuMax = field(default_factory=lambda: CpuMax(MAX))
    cpu_weight: int = 100
    pids_max: IntOrMax = MAX
    io_max: dict[Device, IoMax] = field(default_factory=dict)
    frozen: bool = False
    down_ticks: int = 0
    usage_usec: float = 0.0
    nr_periods: float = 0.0
    nr_throttled: float = 0.0
    throttled_usec: float = 0.0
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_MEM_EVENTS, 0))
    pids_events_max: int = 0
    psi: Psi = field(default_factory=Psi)
    io: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    current: int = 0
    cache_kept: int = 0
    pids_current: int = 0


class KernelModel:
    """The cgroups of a trace under their current limits. ``step(tick)`` advances one tick
    and returns the Snapshot the collector would have read at its end."""

    def __init__(self, trace: Trace, *, restart_ticks: int = 10) -> None:
        self.trace = trace
        self.dt = trace.tick_seconds
        self.restart_ticks = restart_ticks
        self.cgroups: dict[str, CgroupState] = {}
        for w in trace.workloads:
            self.cgroups[w.cgroup] = CgroupState(
                w, memory_max=w.memory_max, memory_high=w.memory_high, cpu_max=w.cpu_max,
                pids_max=w.pids_max,
            )  # fmt: skip
        self.names = {
            w.cgroup: CgroupName(w.cgroup, "container", w.cgroup.rsplit("/", 1)[-1], "", w.labels)
            for w in trace.workloads
        }
        self._prev: HostSample | None = None
        self._seq = 0
        self._killed: set[str] = set()  # cgroup.kill written since the last tick
        self.parents = {path: Psi() for path in ancestors(self.cgroups)}
        for path in self.parents:
            self.names[path] = CgroupName(path, "cgroup", path.rsplit("/", 1)[-1])

    # -- limits ---------------------------------------------------------------------------

    def read(self, cgroup: str, file: str) -> Value | None:
        """The value of a writable file as the kernel would show it now (None for files the
        model does not keep, and for the workloads' ancestors)."""
        s = self.cgroups.get(cgroup)
        if s is None:
            return None
        simple: dict[str, Value] = {
            "memory.high": s.memory_high, "memory.max": s.memory_max,
            "memory.low": s.memory_low, "memory.min": s.memory_min,
            "memory.swap.max": s.swap_max, "pids.max": s.pids_max, "cpu.max": s.cpu_max,
            "cpu.weight": s.cpu_weight, "cgroup.freeze": s.frozen,
        }  # fmt: skip
        if file in simple:
            return simple[file]
        if file == "io.max":
            limit = s.io_max.get(DEVICE)
            return IoLimit(DEVICE, limit) if limit else None
        return None

    def write(self, cgroup: str, file: str, value: Value) -> None:
        """Apply a write; the kernel's response (reclaim, OOM, throttling) shows next tick.
        ValueError for a write the model does not keep (an ancestor, an unknown file)."""
        s = self.cgroups.get(cgroup)
        if s is None:
            raise ValueError(f"simulated write to {cgroup}/{file}: only workloads are modelled")
        if file == "cgroup.kill":
            s.down_ticks = self.restart_ticks
            self._killed.add(cgroup)
        elif file == "cgroup.freeze":
            s.frozen = bool(value)
        elif file == "io.max" and isinstance(value, IoLimit):
            s.io_max[value.device] = value.limit
        elif file == "cpu.max" and isinstance(value, CpuMax):
            s.cpu_max = value
        elif file == "cpu.weight" and isinstance(value, int):
            s.cpu_weight = value
        elif file == "pids.max" and (value is MAX or isinstance(value, int)):
            s.pids_max = value
        elif file in _MEMORY_ATTRS and (value is MAX or isinstance(value, int)):
            # The kernel keeps memory limits in whole pages, rounding a write down.
            pages = value if value is MAX else int(value) // PAGE * PAGE
            setattr(s, _MEMORY_ATTRS[file], pages)
        else:
            raise ValueError(f"simulated write of {value!r} to {cgroup}/{file}: not modelled")

    # -- one tick -------------------------------------------------------------------------

    def step(self, tick: int) -> tuple[Snapshot, dict[str, TickResult]]:
        results: dict[str, TickResult] = {}
        samples: dict[str, CgroupSample] = {}
        killed, self._killed = self._killed, set()
        for path, s in self.cgroups.items():
            r = self._tick(s, tick)
            r.killed = path in killed
            results[path] = r
            samples[path] = self._sample(path, s)
        for path in reversed(list(self.parents)):  # deepest first: children are ready
            kids = [p for p in samples if p.rpartition("/")[0] == path]
            shares = [self._shares(p) for p in kids]
            up = [_populated(samples[p]) for p in kids]
            self.parents[path].update(parent_shares(shares, up), self.dt)
            samples[path] = parent_sample(path, [samples[p] for p in kids], self.parents[path])
        t = tick * self.dt + self.dt
        cur = HostSample(wall_time=START_WALL + t, monotonic=1000.0 + t, cgroups=samples)
        self._seq += 1
        snap = build_snapshot(self._prev, cur, seq=self._seq, names=self.names, collect_seconds=0.0)
        self._prev = cur
        return snap, results

    def _shares(self, path: str) -> dict[str, float]:
        state = self.cgroups.get(path)
        return dict(state.psi.last if state is not None else self.parents[path].last)

    def _tick(self, s: CgroupState, tick: int) -> TickResult:
        w = s.workload
        r = TickResult(working_set=w.working_set[tick], cpu_demand=w.cpu[tick])
        r.memory_limit = min(_cap(s.memory_high), _cap(s.memory_max))
        r.cpu_limit = s.cpu_max.cores if s.cpu_max.cores is not None else math.inf
        if s.down_ticks > 0:  # killed: nothing runs until it has restarted
            s.down_ticks -= 1
            r.down = True
            s.current = s.cache_kept = s.pids_current = 0
            self._psi(s, {})
            return r
        stall = self._memory(s, r, w.working_set[tick], w.cache[tick])
        if r.oom_kill:
            self._psi(s, {})
            return r
        running = 0.0 if s.frozen else 1.0 - stall
        cpu_wait = self._cpu(s, r, w.cpu[tick] * running)
        io_wait = self._io(s, w.io_read[tick] * running, w.io_write[tick] * running)
        self._pids(s, r, w.pids[tick])
        self._psi(s, {
            "memory.some": stall, "memory.full": stall * FULL_SHARE, "cpu.some": cpu_wait,
            "io.some": io_wait, "io.full": io_wait * FULL_SHARE,
        })  # fmt: skip
        r.memory_stall = stall
        return r

    def _memory(self, s: CgroupState, r: TickResult, ws: int, cache: int) -> float:
        """Usage, events and the share of the tick stalled in reclaim."""
        hard, high = _cap(s.memory_max), _cap(s.memory_high)
        if ws > hard:  # reclaim cannot free anonymous memory: the OOM killer runs
            for key in ("max", "oom", "oom_kill"):
                s.events[key] += 1
            r.oom_kill = True
            s.down_ticks = self.restart_ticks
            s.current = s.cache_kept = s.pids_current = 0
            return 0.0
        limit = min(hard, high)
        kept = cache if ws + cache <= limit else int(max(limit - ws, 0))
        s.cache_kept = kept
        s.current = ws + kept
        stall = 0.0
        if kept < cache:
            s.events["high" if high <= hard else "max"] += 1
            evicted = (cache - kept) / cache
            stall += CACHE_REFAULT_STALL * evicted * evicted
        if ws > high:  # the working set itself is squeezed: throttled in reclaim
            stall += HOT_STALL_BASE + HOT_STALL_SLOPE * (ws - high) / ws
        return min(stall, 1.0)

    def _cpu(self, s: CgroupState, r: TickResult, demand: float) -> float:
        """Usage capped at the quota; returns the share of the tick runnable but waiting."""
        dt_usec = self.dt * 1e6
        quota = r.cpu_limit
        used = min(demand, quota)
        r.cpu_used = used
        s.usage_usec += used * dt_usec
        if quota != math.inf and demand > 0:
            periods = dt_usec / s.cpu_max.period
            s.nr_periods += periods
            if demand > quota:
                s.nr_throttled += periods
                throttled = dt_usec * (1.0 - quota / demand)
                s.throttled_usec += throttled
                r.throttled_seconds = throttled / 1e6
        return 0.0 if demand <= 0 else 1.0 - used / demand

    def _io(self, s: CgroupState, read: float, write: float) -> float:
        limit = s.io_max.get(DEVICE)
        rcap = _cap(limit.rbps) if limit else math.inf
        wcap = _cap(limit.wbps) if limit else math.inf
        done_r, done_w = min(read, rcap), min(write, wcap)
        s.io[0] += done_r * self.dt
        s.io[1] += done_w * self.dt
        s.io[2] += done_r * self.dt / 65536
        s.io[3] += done_w * self.dt / 65536
        wanted = read + write
        return 0.0 if wanted <= 0 else 1.0 - (done_r + done_w) / wanted

    def _pids(self, s: CgroupState, r: TickResult, wanted: int) -> None:
        cap = _cap(s.pids_max)
        s.pids_current = int(min(wanted, cap))
        if wanted > cap:
            r.fork_failures = int(wanted - cap)
            s.pids_events_max += r.fork_failures

    def _psi(self, s: CgroupState, shares: dict[str, float]) -> None:
        s.psi.update(shares, self.dt)

    # -- the sample the collector would read ----------------------------------------------

    def _sample(self, path: str, s: CgroupState) -> CgroupSample:
        usage = int(s.usage_usec)
        cpu = CpuStat(
            usage_usec=usage, user_usec=usage * 9 // 10, system_usec=usage - usage * 9 // 10,
            nr_periods=int(s.nr_periods), nr_throttled=int(s.nr_throttled),
            throttled_usec=int(s.throttled_usec), nr_bursts=0, burst_usec=0,
        )  # fmt: skip
        anon = s.current - s.cache_kept
        ev = s.events
        up = s.down_ticks == 0
        return CgroupSample(
            path=path,
            cpu=cpu,
            memory_current=s.current,
            memory_peak=None,
            memory_stat={"anon": anon, "file": s.cache_kept, "inactive_file": s.cache_kept},
            memory_events=MemoryEvents(ev["low"], ev["high"], ev["max"], ev["oom"], ev["oom_kill"]),
            swap_current=0,
            io={DEVICE: IoStat(*(int(v) for v in s.io))},
            pids_current=s.pids_current,
            pids_events=PidsEvents(s.pids_events_max),
            pressure={res: s.psi.pressure(res) for res in ("cpu", "memory", "io")},
            events=CgroupEvents(populated=up, frozen=s.frozen),
            nr_procs=s.pids_current,
            limits=Limits(
                cpu_max=s.cpu_max,
                cpu_weight=s.cpu_weight,
                memory_min=s.memory_min,
                memory_low=s.memory_low,
                memory_high=s.memory_high,
                memory_max=s.memory_max,
                swap_max=s.swap_max,
                io_max=dict(s.io_max),
                pids_max=s.pids_max,
            ),
        )


def _populated(sample: CgroupSample) -> bool:
    return sample.events is None or sample.events.populated


_MEMORY_ATTRS = {
    "memory.high": "memory_high",
    "memory.max": "memory_max",
    "memory.low": "memory_low",
    "memory.min": "memory_min",
    "memory.swap.max": "swap_max",
}
