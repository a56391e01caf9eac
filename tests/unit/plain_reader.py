"""A deliberately plain reader of a cgroup tree into CgroupSamples, through runtime.cgroupfs'
read_* functions one file at a time: what the kernel printed, without the collector's
kept-open files and caches. The exporter and recording tests compare against it."""

from __future__ import annotations

from monitor.sample import CgroupSample, Limits
from runtime.cgroupfs import CgroupFS, core, cpu, io, memory, pids, pressure


def read_limits(fs: CgroupFS, path: str) -> Limits:
    def mem(name: str) -> memory.IntOrMax | None:
        return memory.read_memory_limit(fs, path, name)

    return Limits(
        cpu_max=cpu.read_cpu_max(fs, path),
        cpu_weight=cpu.read_cpu_weight(fs, path),
        memory_min=mem("memory.min"),
        memory_low=mem("memory.low"),
        memory_high=mem("memory.high"),
        memory_max=mem("memory.max"),
        swap_max=mem("memory.swap.max"),
        io_max=io.read_io_max(fs, path),
        pids_max=pids.read_pids_max(fs, path),
    )


def read_cgroup(fs: CgroupFS, path: str) -> CgroupSample:
    found = {r: pressure.read_pressure(fs, path, r) for r in pressure.RESOURCES}
    return CgroupSample(
        path=path,
        cpu=cpu.read_cpu_stat(fs, path),
        memory_current=memory.read_memory_current(fs, path),
        memory_peak=memory.read_memory_peak(fs, path),
        memory_stat=memory.read_memory_stat(fs, path),
        memory_events=memory.read_memory_events(fs, path),
        swap_current=memory.read_memory_swap_current(fs, path),
        io=io.read_io_stat(fs, path),
        pids_current=pids.read_pids_current(fs, path),
        pids_events=pids.read_pids_events(fs, path),
        pressure={r: p for r, p in found.items() if p is not None},
        events=core.read_cgroup_events(fs, path),
        nr_procs=len(fs.procs(path)),
        limits=read_limits(fs, path),
    )
