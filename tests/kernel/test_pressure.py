"""Memory pressure raises the memory.pressure totals (accounting/psi.rst).

A buffered read of the scratch disk fills the page cache, which is charged to the reader's
cgroup; under a memory.max far below what it reads, every further page has to be reclaimed
first, and the kernel counts the time spent in that direct reclaim as a memory stall.
"""

from __future__ import annotations

from kernel_harness import BUSYBOX, Figures, MiB, Spawn

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.memory import read_memory_events, read_memory_stat, write_memory_limit
from runtime.cgroupfs.pressure import Pressure, read_pressure


def memory_pressure(fs: CgroupFS, cgroup: str) -> Pressure:
    value = read_pressure(fs, cgroup, "memory")
    assert value is not None, f"{cgroup}: memory.pressure unreadable (PSI disabled?)"
    return value


def read_disk(spawn: Spawn, path: str, skip_mib: int, mib: int) -> None:
    """Buffered read of ``mib`` MiB of the disk from ``skip_mib`` MiB on, inside the cgroup."""
    argv = [BUSYBOX, "dd", f"if={path}", "of=/dev/null", "bs=1M", f"skip={skip_mib}"]
    reader = spawn([*argv, f"count={mib}"])
    status = reader.wait(120)
    assert status == 0, f"dd exited {status}: {reader.drain()}"


def test_memory_pressure_raises_memory_pressure_totals(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    path, _ = scratch_disk
    start = memory_pressure(fs, cgroup)

    # Without a limit the page cache just grows: no reclaim, (next to) no stall.
    read_disk(spawn, path, 0, 64)
    free = memory_pressure(fs, cgroup)

    write_memory_limit(fs, cgroup, "memory.max", 16 * MiB)
    read_disk(spawn, path, 64, 192)
    squeezed = memory_pressure(fs, cgroup)

    stat = read_memory_stat(fs, cgroup) or {}
    events = read_memory_events(fs, cgroup)
    assert events is not None
    some_free = free.some.total_usec - start.some.total_usec
    some = squeezed.some.total_usec - free.some.total_usec
    assert squeezed.full is not None and free.full is not None
    full = squeezed.full.total_usec - free.full.total_usec
    figures.note(
        f"memory.pressure some total: +{some_free} us reading 64 MiB unlimited, "
        f"+{some} us (full +{full} us) reading 192 MiB under memory.max 16M; "
        f"memory.events max={events.max}; pgsteal {stat.get('pgsteal')}"
    )
    assert events.max > 0, f"the reader never reached memory.max: {events}"
    assert stat.get("pgsteal", 0) > 0, "no page was reclaimed from the cgroup"
    assert some > 0, "memory.pressure some total did not rise under reclaim"
    assert some > some_free, (
        f"memory stall under memory.max (+{some} us) not above the unlimited read's "
        f"(+{some_free} us)"
    )
