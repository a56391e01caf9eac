"""The workloads' ancestors (e.g. ``corral`` above ``corral/web``) as the collector sees
them: hierarchical counters are the children's sums (cgroup-v2.rst: memory.current,
memory.stat, memory.events, cpu.stat usage, io.stat and pids.current include descendants);
the ancestors have no limits of their own. Their PSI follows psi.rst's definitions over
the children's tasks: ``some`` when any child stalls, ``full`` only when every child with
tasks stalls at once, approximated per tick as the max and the min of the children's shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from enforce.simulate.psi import KEYS, Psi
from monitor.sample import CgroupSample, Limits
from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import IoStat
from runtime.cgroupfs.memory import MemoryEvents
from runtime.cgroupfs.pids import PidsEvents

UNLIMITED = Limits(
    cpu_max=CpuMax(MAX), cpu_weight=100, memory_min=0, memory_low=0, memory_high=MAX,
    memory_max=MAX, swap_max=MAX, io_max={}, pids_max=MAX,
)  # fmt: skip


def ancestors(paths: Iterable[str]) -> list[str]:
    """Every proper ancestor of ``paths`` below the root, shallowest first."""
    out: set[str] = set()
    for path in paths:
        parts = path.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(out, key=lambda p: (p.count("/"), p))


def parent_shares(children: Sequence[Mapping[str, float]], up: Sequence[bool]) -> dict[str, float]:
    """This tick's stall shares of a parent from its children's (see the module doc)."""
    shares: dict[str, float] = {}
    live = [c for c, u in zip(children, up, strict=True) if u]
    for key in KEYS:
        if key.endswith(".some"):
            shares[key] = max((c.get(key, 0.0) for c in children), default=0.0)
        else:
            shares[key] = min((c.get(key, 0.0) for c in live), default=0.0)
    return shares


def parent_sample(path: str, children: Sequence[CgroupSample], psi: Psi) -> CgroupSample:
    """The parent's sample: sums of its children's hierarchical figures."""

    def total(get: Callable[[CgroupSample], int | None]) -> int:
        return sum(get(c) or 0 for c in children)

    stat: dict[str, int] = {}
    for child in children:
        for key, value in (child.memory_stat or {}).items():
            stat[key] = stat.get(key, 0) + value
    usage = total(lambda c: c.cpu.usage_usec if c.cpu else 0)
    ev = [c.memory_events for c in children if c.memory_events]
    io = [s for c in children for s in (c.io or {}).values()]
    device = next(iter(children[0].io or {}), None) if children else None
    return CgroupSample(
        path=path,
        cpu=CpuStat(usage, usage * 9 // 10, usage - usage * 9 // 10, 0, 0, 0, 0, 0),
        memory_current=total(lambda c: c.memory_current),
        memory_stat=stat,
        memory_events=MemoryEvents(
            *(sum(getattr(e, k) for e in ev) for k in ("low", "high", "max", "oom", "oom_kill"))
        ),
        swap_current=0,
        io=None if device is None else {device: _io_sum(io)},
        pids_current=total(lambda c: c.pids_current),
        pids_events=PidsEvents(0),
        pressure={res: psi.pressure(res) for res in ("cpu", "memory", "io")},
        events=CgroupEvents(populated=any(c.events and c.events.populated for c in children),
                            frozen=False),
        nr_procs=0,
        limits=UNLIMITED,
    )  # fmt: skip


def _io_sum(stats: Sequence[IoStat]) -> IoStat:
    keys = ("rbytes", "wbytes", "rios", "wios", "dbytes", "dios")
    return IoStat(*(sum(getattr(s, k) for s in stats) for k in keys))
