"""io.max holds O_DIRECT writes on the machine's scratch disk to the set rate, and io.stat
counts the bytes written.

O_DIRECT bypasses the page cache, so each write(2) becomes a bio issued by the writer itself
and is charged to (and throttled in) the writer's cgroup, not to a writeback thread.
"""

from __future__ import annotations

from kernel_harness import START_TIMEOUT, Figures, MiB, Spawn, Workload, python_argv
from workloads import DIRECT_WRITER

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device, IoMax, read_io_max, read_io_stat, write_io_max
from runtime.cgroupfs.limit_syntax import parse_io_limit

CHUNK = 256 * 1024
RATE = 2 * MiB


def write(writer: Workload, size: int) -> tuple[int, float]:
    writer.send(f"write {size}")
    done, seconds = writer.expect("wrote", 120)
    return int(done), float(seconds)


def written(fs: CgroupFS, cgroup: str, device: Device) -> int:
    stat = read_io_stat(fs, cgroup)
    assert stat is not None, f"{cgroup}: no io.stat"
    return stat[device].wbytes if device in stat else 0


def test_io_max_holds_direct_writes_to_the_rate_and_io_stat_counts_them(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    path, device = scratch_disk
    writer = spawn(python_argv(DIRECT_WRITER, path, str(CHUNK)))
    writer.expect("ready", START_TIMEOUT)
    assert written(fs, cgroup, device) == 0

    # Unthrottled first: the disk must be able to go much faster than the limit, or the
    # limit would not be what holds the writer back.
    free_bytes, free_seconds = write(writer, 16 * MiB)
    free_rate = free_bytes / free_seconds

    limit_device, limit = parse_io_limit(f"{path} wbps=2M")
    assert (limit_device, limit) == (device, IoMax(wbps=RATE))
    write_io_max(fs, cgroup, {device: limit})
    assert read_io_max(fs, cgroup) == {device: limit}
    held_bytes, held_seconds = write(writer, 8 * MiB)
    held_rate = held_bytes / held_seconds

    counted = written(fs, cgroup, device)
    figures.note(f"unthrottled O_DIRECT writes: {free_rate / MiB:.1f} MiB/s")
    assert free_rate > 4 * RATE, (
        f"the disk alone writes only {free_rate / MiB:.1f} MiB/s: too slow to test a 2 MiB/s limit"
    )
    figures.within(f"io.max wbps=2M: rate over {held_seconds:.2f} s", held_rate, RATE, 0.20, " B/s")
    figures.within("io.stat wbytes vs bytes written", counted, free_bytes + held_bytes, 0.05, " B")
