"""Builders for the enforce unit tests: hand-made HostSample/CgroupSample values turned into
Snapshots by monitor.snapshot.build_snapshot (the same code the collector and the replay use).
No tests here; the other test_enforce_* modules import these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from enforce.actions import Action, AuditEntry, Outcome
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName, Snapshot, build_snapshot
from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX, IntOrMax
from runtime.cgroupfs.io import Device, IoMax
from runtime.cgroupfs.pids import PidsEvents
from runtime.cgroupfs.pressure import Pressure, PressureLine

G = 1 << 30
M = 1 << 20


def psi(total_usec: int = 0, full_usec: int | None = None, full_avg10: float = 0.0) -> Pressure:
    """A *.pressure value; avg10 of ``full`` in percent, as the file shows it."""
    full = None
    if full_usec is not None:
        full = PressureLine(full_avg10, full_avg10, full_avg10, full_usec)
    return Pressure(PressureLine(0.0, 0.0, 0.0, total_usec), full)


def cg(
    path: str,
    *,
    current: int | None = 1 * G,
    stat: Mapping[str, int] | None = None,
    mem_some: int = 0,
    mem_full: int | None = 0,
    full_avg10: float = 0.0,
    io_some: int | None = None,
    cpu_some: int | None = None,
    high: IntOrMax | None = MAX,
    memory_max: IntOrMax | None = MAX,
    memory_min: IntOrMax | None = 0,
    cpu: tuple[int, int, int] | None = None,
    cpu_max: CpuMax | None = None,
    pids: int | None = None,
    pids_max: IntOrMax | None = None,
    refused: int = 0,
    io_max: Mapping[Device, IoMax] | None = None,
    frozen: bool | None = False,
) -> CgroupSample:
    """One cgroup. ``cpu`` = (usage_usec, nr_periods, nr_throttled); ``*_some`` are the
    pressure files' ``some`` totals (us)."""
    pressure = {"memory": psi(mem_some, mem_full, full_avg10)}
    if io_some is not None:
        pressure["io"] = psi(io_some, io_some)
    if cpu_some is not None:
        pressure["cpu"] = psi(cpu_some)
    cpu_stat = None
    if cpu is not None:
        usage, periods, throttled = cpu
        cpu_stat = CpuStat(usage, usage, 0, periods, throttled, 0)
    return CgroupSample(
        path=path,
        cpu=cpu_stat,
        memory_current=current,
        memory_stat=stat if stat is not None else _cache(current),
        pids_current=pids,
        pids_events=PidsEvents(refused) if pids is not None else None,
        pressure=pressure,
        events=None if frozen is None else CgroupEvents(populated=True, frozen=frozen),
        limits=Limits(
            cpu_max=cpu_max,
            memory_min=memory_min,
            memory_high=high,
            memory_max=memory_max,
            io_max=io_max,
            pids_max=pids_max,
        ),
    )


def _cache(current: int | None) -> dict[str, int]:
    """Three quarters of memory.current as page cache: a reclaimable working set."""
    cache = (current or 0) * 3 // 4
    return {"anon": (current or 0) - cache, "active_file": cache // 2, "inactive_file": cache // 2}


def host(t: float, *cgroups: CgroupSample) -> HostSample:
    return HostSample(
        wall_time=1_700_000_000.0 + t, monotonic=t, cgroups={c.path: c for c in cgroups}
    )


def names_for(paths: Sequence[str], **labels: Mapping[str, str]) -> dict[str, CgroupName]:
    """Containers for every path below corral/ (labels by container name), plain cgroups
    elsewhere."""
    out = {}
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        kind = "container" if path.startswith("corral/") else "cgroup"
        out[path] = CgroupName(path, kind, name, labels=dict(labels.get(name, {})))
    return out


def history(*hosts: HostSample, names: Mapping[str, CgroupName] | None = None) -> list[Snapshot]:
    """Snapshots of consecutive polls, oldest first."""
    out: list[Snapshot] = []
    prev = None
    for i, h in enumerate(hosts):
        known = names if names is not None else names_for(list(h.cgroups))
        out.append(build_snapshot(prev, h, seq=i + 1, names=known, collect_seconds=0.01))
        prev = h
    return out


def entry(action: Action, outcome: Outcome, time: float = 0.0) -> AuditEntry:
    return AuditEntry.of(action, outcome, time)


def only(actions: Sequence[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


def summary(actions: Sequence[Action]) -> list[tuple[str, str, Any]]:
    return [(a.cgroup, a.file, a.new) for a in actions]
