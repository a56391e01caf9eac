"""Traces: what each workload would use per tick if nothing limited it.

A trace holds per-tick demand (memory working set and reclaimable cache in bytes, CPU in
cores, task count, io bytes per second) of one or more workloads, each with the limits a
person declared for it (the "fixed manual limits" baseline, and every policy's starting
point). Synthetic traces are deterministic functions of their seed; ``from_recording``
derives demand from a ``corral record`` recording.

Time is compressed in the synthetic library: one "day" of the diurnal trace lasts an hour of
1 s ticks, so that a run takes seconds. The VPA and Autopilot baselines keep their published
half-lives (hours), so over an hour they behave as in their first hour in production.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor.recording import Recording
from monitor.sample import CgroupSample
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX, IntOrMax

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True, slots=True)
class Workload:
    """One cgroup's demand, one entry per tick, and its declared (manual) limits."""

    cgroup: str  # path relative to the cgroup2 root, e.g. "corral/web"
    working_set: tuple[int, ...]  # bytes that cannot be reclaimed without stalling it
    cache: tuple[int, ...]  # reclaimable page cache it would keep if allowed
    cpu: tuple[float, ...]  # cores it would use
    pids: tuple[int, ...]
    io_read: tuple[float, ...]  # bytes per second
    io_write: tuple[float, ...]
    memory_max: IntOrMax = MAX
    memory_high: IntOrMax = MAX
    cpu_max: CpuMax = field(default_factory=lambda: CpuMax(MAX))
    pids_max: IntOrMax = MAX
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.working_set)
        series = (self.cache, self.cpu, self.pids, self.io_read, self.io_write)
        if any(len(s) != n for s in series):
            raise ValueError(f"workload {self.cgroup!r}: every demand series needs {n} ticks")


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    tick_seconds: float
    workloads: tuple[Workload, ...]
    description: str = ""

    @property
    def ticks(self) -> int:
        return len(self.workloads[0].working_set) if self.workloads else 0


def _workload(
    name: str,
    ws: Sequence[float],
    cache: Sequence[float],
    cpu: Sequence[float],
    pids: Sequence[float],
    *,
    memory_max: IntOrMax,
    cpus: float,
    pids_max: IntOrMax = 4096,
    io: float = 0.0,
) -> Workload:
    n = len(ws)
    return Workload(
        cgroup=f"corral/{name}",
        working_set=tuple(int(max(v, 0)) for v in ws),
        cache=tuple(int(max(v, 0)) for v in cache),
        cpu=tuple(max(v, 0.0) for v in cpu),
        pids=tuple(int(max(v, 1)) for v in pids),
        io_read=(io,) * n,
        io_write=(io / 2,) * n,
        memory_max=memory_max,
        cpu_max=CpuMax(round(cpus * 100_000), 100_000),
        pids_max=pids_max,
        labels={"app": name},
    )


def _doc(fn: Callable[..., Trace]) -> str:
    return " ".join((fn.__doc__ or "").split())


def diurnal(seconds: int = 3600, seed: int = 1) -> Trace:
    """A web service whose load follows a (compressed) day: working set 400-650 MiB, CPU
    0.3-1.3 cores, cache growing with load; declared limits about twice the peak."""
    rnd = random.Random(seed)
    ws, cache, cpu, pids = [], [], [], []
    for t in range(seconds):
        load = (1 - math.cos(2 * math.pi * t / seconds)) / 2
        ws.append(400 * MIB + 250 * MIB * load + rnd.gauss(0, 4 * MIB))
        cache.append(150 * MIB + 250 * MIB * load)
        cpu.append(0.3 + 1.0 * load + rnd.gauss(0, 0.05))
        pids.append(40 + 20 * load)
    w = _workload("web", ws, cache, cpu, pids, memory_max=int(1.25 * GIB), cpus=2.5, io=2e6)
    return Trace("diurnal", 1.0, (w,), _doc(diurnal))


def step(seconds: int = 3600, seed: int = 2) -> Trace:
    """A service whose load triples a third of the way in (a release, a traffic shift):
    working set 300 -> 800 MiB, CPU 0.4 -> 1.4 cores."""
    rnd = random.Random(seed)
    ws, cache, cpu, pids = [], [], [], []
    for t in range(seconds):
        high = t >= seconds // 3
        ws.append((800 if high else 300) * MIB + rnd.gauss(0, 3 * MIB))
        cache.append((300 if high else 100) * MIB)
        cpu.append((1.4 if high else 0.4) + rnd.gauss(0, 0.04))
        pids.append(60 if high else 30)
    w = _workload("api", ws, cache, cpu, pids, memory_max=int(1.5 * GIB), cpus=2.0, io=1e6)
    return Trace("step", 1.0, (w,), _doc(step))


def leak(seconds: int = 3600, seed: int = 3) -> Trace:
    """A worker leaking 250 KiB a second from 200 MiB: past 1 GiB near the end of the hour,
    its declared memory.max."""
    rnd = random.Random(seed)
    ws = [200 * MIB + 250 * 1024 * t + rnd.gauss(0, 2 * MIB) for t in range(seconds)]
    cache = [100 * MIB] * seconds
    cpu = [0.2 + rnd.gauss(0, 0.02) for _ in range(seconds)]
    pids = [12.0] * seconds
    w = _workload("worker", ws, cache, cpu, pids, memory_max=1 * GIB, cpus=1.0, io=5e5)
    return Trace("leak", 1.0, (w,), _doc(leak))


def spiky_batch(seconds: int = 3600, seed: int = 4) -> Trace:
    """Idle at 0.2 cores and 300 MiB, with batch runs at random times (every 2-6 minutes,
    30-120 s long) using 2.5-3.5 cores and 500 MiB more."""
    rnd = random.Random(seed)
    ws, cache, cpu, pids = [], [], [], []
    t, busy_until, next_start = 0, -1, rnd.randint(60, 240)
    cores, extra = 0.0, 0.0
    while t < seconds:
        if t == next_start:
            busy_until = t + rnd.randint(30, 120)
            next_start = busy_until + rnd.randint(120, 360)
            cores, extra = rnd.uniform(2.5, 3.5), 500 * MIB
        busy = t < busy_until
        ws.append(300 * MIB + (extra if busy else 0) + rnd.gauss(0, 2 * MIB))
        cache.append(200 * MIB)
        cpu.append((cores if busy else 0.2) + rnd.gauss(0, 0.03))
        pids.append(80 if busy else 20)
        t += 1
    w = _workload("batch", ws, cache, cpu, pids, memory_max=2 * GIB, cpus=4.0, io=4e6)
    return Trace("spiky_batch", 1.0, (w,), _doc(spiky_batch))


def fork_storm(seconds: int = 1800, seed: int = 5) -> Trace:
    """A service of 30 tasks that, halfway through, forks without bound for 5 minutes
    (doubling every 20 s up to 20,000 tasks), next to a quiet neighbour."""
    rnd = random.Random(seed)
    onset, end = seconds // 2, seconds // 2 + 300
    pids = [30 * 2 ** ((t - onset) / 20) if onset <= t < end else 30 for t in range(seconds)]
    pids = [min(p, 20000.0) for p in pids]
    cpu = [0.3 + (0.7 if onset <= t < end else 0.0) + rnd.gauss(0, 0.02) for t in range(seconds)]
    ws = [250 * MIB + p * 64 * 1024 for p in pids]
    storm = _workload("forky", ws, [50 * MIB] * seconds, cpu, pids, memory_max=2 * GIB, cpus=1.0)
    quiet_ws = [300 * MIB + rnd.gauss(0, 2 * MIB) for _ in range(seconds)]
    quiet_cpu = [0.5 + rnd.gauss(0, 0.03) for _ in range(seconds)]
    quiet = _workload(
        "neighbour", quiet_ws, [100 * MIB] * seconds, quiet_cpu, [25.0] * seconds,
        memory_max=1 * GIB, cpus=1.0,
    )  # fmt: skip
    return Trace("fork_storm", 1.0, (storm, quiet), _doc(fork_storm))


SYNTHETIC: Mapping[str, Callable[[], Trace]] = {
    "diurnal": diurnal,
    "step": step,
    "leak": leak,
    "spiky_batch": spiky_batch,
    "fork_storm": fork_storm,
}


class TraceError(ValueError):
    """A trace that cannot be loaded; the message names it and what is allowed."""


def load_trace(spec: str) -> Trace:
    """``synthetic:NAME`` (one of SYNTHETIC) or the path of a ``corral record`` recording."""
    if spec.startswith("synthetic:"):
        name = spec.removeprefix("synthetic:")
        make = SYNTHETIC.get(name)
        if make is None:
            allowed = ", ".join(f"synthetic:{n}" for n in SYNTHETIC)
            raise TraceError(f"trace {spec!r}: no synthetic trace {name!r}; allowed: {allowed}")
        return make()
    if not os.path.exists(spec):
        allowed = ", ".join(f"synthetic:{n}" for n in SYNTHETIC)
        raise TraceError(f"trace {spec!r}: no such recording; or use one of {allowed}")
    return from_recording(spec)


def from_recording(path: str, *, under: str = "", reroot: str | None = None) -> Trace:
    """Demand derived from a recording's samples for every leaf cgroup (under ``under``) that
    has memory and CPU figures: working set = memory.current - inactive_file, cache =
    inactive_file, CPU = usage rate plus the throttled share (what cpu.max held back), pids
    and io as recorded. Declared limits are those of the first frame.

    ``reroot`` replays each leaf as ``REROOT/<its name>`` (e.g. a recording of systemd
    services as if they had been corral containers, which the default policy governs)."""
    with Recording(path) as rec:
        snaps = list(rec.snapshots())
    if len(snaps) < 2:
        raise TraceError(
            f"trace {path!r}: a recording needs at least 2 frames, it has {len(snaps)}"
        )
    paths = _leaves(snaps[0].sample.cgroups, under)
    first = snaps[0].sample.cgroups
    series: dict[str, dict[str, list[float]]] = {
        p: {k: [] for k in ("ws", "cache", "cpu", "pids", "rd", "wr")} for p in paths
    }
    for snap in snaps[1:]:
        for p in paths:
            _demand_at(series[p], snap.sample.cgroups.get(p), snap.models.get(p))
    workloads = tuple(
        _recorded_workload(p, first[p], series[p], _rerooted(p, reroot, paths)) for p in paths
    )
    gaps = [b.sample.monotonic - a.sample.monotonic for a, b in itertools.pairwise(snaps)]
    tick = sorted(gaps)[len(gaps) // 2]
    name = os.path.basename(path)
    return Trace(name, tick, workloads, f"recording {path}: {len(paths)} cgroups")


def _leaves(cgroups: Mapping[str, CgroupSample], under: str) -> list[str]:
    prefix = under.rstrip("/") + "/" if under else ""
    paths = [
        p
        for p, s in cgroups.items()
        if p and p.startswith(prefix) and s.memory_current is not None and s.cpu is not None
    ]
    return sorted(p for p in paths if not any(q.startswith(p + "/") for q in paths))


def _demand_at(out: dict[str, list[float]], sample: object, model: object) -> None:
    """Append one tick; a cgroup missing from a frame repeats its last demand (or zero)."""
    from monitor.model import CgroupModel

    if not isinstance(sample, CgroupSample) or not isinstance(model, CgroupModel):
        for series in out.values():
            series.append(series[-1] if series else 0.0)
        return
    inactive = (sample.memory_stat or {}).get("inactive_file", 0)
    out["ws"].append(float(model.working_set_bytes or 0))
    out["cache"].append(float(inactive))
    cores = model.cpu_cores or 0.0
    out["cpu"].append(cores * (1.0 + (model.throttled_ratio or 0.0)))
    out["pids"].append(float(sample.pids_current or sample.nr_procs or 1))
    out["rd"].append(model.io_read_bytes_per_second or 0.0)
    out["wr"].append(model.io_write_bytes_per_second or 0.0)


def _rerooted(path: str, reroot: str | None, paths: list[str]) -> str:
    if reroot is None:
        return path
    leaf = path.rsplit("/", 1)[-1]
    if sum(1 for p in paths if p.rsplit("/", 1)[-1] == leaf) > 1:
        leaf = path.replace("/", "-")  # two leaves of the same name: keep them apart
    return f"{reroot.strip('/')}/{leaf}"


def _recorded_workload(
    path: str, first: CgroupSample, s: dict[str, list[float]], cgroup: str
) -> Workload:
    lim = first.limits
    return Workload(
        cgroup=cgroup,
        working_set=tuple(int(v) for v in s["ws"]),
        cache=tuple(int(v) for v in s["cache"]),
        cpu=tuple(s["cpu"]),
        pids=tuple(max(int(v), 1) for v in s["pids"]),
        io_read=tuple(s["rd"]),
        io_write=tuple(s["wr"]),
        memory_max=lim.memory_max if lim.memory_max is not None else MAX,
        memory_high=lim.memory_high if lim.memory_high is not None else MAX,
        cpu_max=lim.cpu_max or CpuMax(MAX),
        pids_max=lim.pids_max if lim.pids_max is not None else MAX,
    )
