"""cpu.max throttles a busy loop to its quota, and cpu.stat's usage is the time it was busy.

The workload is a busybox shell spinning on ``:``; the measurement window is wall time in
this process, against the kernel's cpu.stat read at both ends of the window.
"""

from __future__ import annotations

import time

from kernel_harness import Figures, Spawn, busybox_sh, wait_until

from runtime.cgroupfs import MAX, CgroupFS
from runtime.cgroupfs.cpu import CpuMax, CpuStat, read_cpu_max, read_cpu_stat, write_cpu_max
from runtime.cgroupfs.limit_syntax import parse_cpus

BUSY_LOOP = busybox_sh("while :; do :; done")


def cpu_stat(fs: CgroupFS, cgroup: str) -> CpuStat:
    stat = read_cpu_stat(fs, cgroup)
    assert stat is not None, f"{cgroup}: no cpu.stat"
    return stat


def window(fs: CgroupFS, cgroup: str, seconds: float) -> tuple[CpuStat, CpuStat, float]:
    """cpu.stat at both ends of ``seconds`` of wall time while the workload runs."""
    before, t0 = cpu_stat(fs, cgroup), time.monotonic()
    time.sleep(seconds)  # the measurement window itself: the workload runs meanwhile
    after, t1 = cpu_stat(fs, cgroup), time.monotonic()
    return before, after, t1 - t0


def started_spinning(fs: CgroupFS, cgroup: str) -> None:
    wait_until(lambda: cpu_stat(fs, cgroup).usage_usec > 50_000, 60, "the busy loop to run")


def test_cpu_max_throttles_a_busy_loop_to_its_quota(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    limit = parse_cpus("0.2")
    write_cpu_max(fs, cgroup, limit)
    assert read_cpu_max(fs, cgroup) == CpuMax(20_000, 100_000)
    spawn(BUSY_LOOP)
    started_spinning(fs, cgroup)

    before, after, wall = window(fs, cgroup, 3.0)

    assert after.nr_throttled is not None and before.nr_throttled is not None
    throttled = after.nr_throttled - before.nr_throttled
    periods = (after.nr_periods or 0) - (before.nr_periods or 0)
    figures.note(
        f"cpu.max 0.2: {throttled} of {periods} periods throttled in {wall:.2f} s, "
        f"throttled_usec +{(after.throttled_usec or 0) - (before.throttled_usec or 0):,}"
    )
    assert throttled > 0, f"cpu.stat nr_throttled did not grow over {wall:.2f} s of busy loop"
    assert limit.cores is not None
    figures.within(
        "cpu.max 0.2: usage vs quota x wall",
        after.usage_usec - before.usage_usec,
        limit.cores * wall * 1e6,
        0.20,
        " us",
    )


def test_cpu_usage_matches_busy_time(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    write_cpu_max(fs, cgroup, CpuMax(MAX))
    spawn(BUSY_LOOP)
    started_spinning(fs, cgroup)

    before, after, wall = window(fs, cgroup, 2.0)

    figures.within(
        "unlimited busy loop: cpu.stat usage vs busy wall time",
        after.usage_usec - before.usage_usec,
        wall * 1e6,
        0.15,
        " us",
    )
    assert after.nr_throttled == before.nr_throttled, "throttled without a cpu.max quota"
