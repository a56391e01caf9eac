"""CgroupFS on the host's real cgroup2 while cgroups are created and removed underneath it.

The build machines mount cgroup2 (hybrid: /sys/fs/cgroup/unified, no controllers) and let
root mkdir/rmdir child cgroups, which still have cpu.stat, cgroup.events and the pressure
files. One thread churns thousands of cgroups; the test's thread walks the tree and reads
every cgroup it finds. The design's contract: a cgroup vanishing mid-walk or mid-read is
CgroupGone (or simply not yielded), never another error, never None, and no fd leaks.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.cgroupfs import CgroupFS, CgroupGone, core, cpu, pressure

CGROUPS = 3000  # created and removed by the churning thread
DEADLINE_S = 10.0  # a bound on the whole test, whatever the host's speed
LIVE = 16  # how many churned cgroups exist at once

READS: list[tuple[str, Callable[[CgroupFS, str], Any]]] = [
    ("cpu.stat", cpu.read_cpu_stat),
    ("cgroup.events", core.read_cgroup_events),
    ("memory.pressure", lambda fs, cg: pressure.read_pressure(fs, cg, "memory")),
]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _churn(fs: CgroupFS, parent: str, stop: threading.Event, made: list[int]) -> None:
    """Create ``parent/aN/b`` (two cgroups) and remove the oldest, until CGROUPS are made."""
    live: deque[str] = deque()
    i = 0
    while made[0] < CGROUPS and not stop.is_set():
        name = f"{parent}/a{i}"
        fs.create(f"{name}/b")
        made[0] += 2
        live.append(name)
        if len(live) > LIVE:
            fs.remove(live.popleft(), recursive=True)
        i += 1
    while live:
        fs.remove(live.popleft(), recursive=True)


def test_walk_and_read_during_churn(host_cgroup2: Path) -> None:
    fs = CgroupFS(host_cgroup2)
    parent = f"corral-unit-churn-{os.getpid()}"
    fds_before = _open_fds()
    fs.create(parent)
    stop = threading.Event()
    made = [0]
    failures: list[BaseException] = []

    def churner() -> None:
        try:
            _churn(fs, parent, stop, made)
        except BaseException as e:  # reported by the test thread below
            failures.append(e)

    thread = threading.Thread(target=churner, name="churn", daemon=True)
    reads = gone = walks = 0
    seen: set[str] = set()
    deadline = time.monotonic() + DEADLINE_S
    try:
        thread.start()
        while thread.is_alive() and time.monotonic() < deadline:
            walks += 1
            for cgroup in fs.walk(parent):
                seen.add(cgroup)
                for name, read in READS:
                    try:
                        value = read(fs, cgroup)
                    except CgroupGone as e:
                        assert e.cgroup == cgroup
                        gone += 1
                        break
                    assert value is not None, f"{cgroup}/{name}: None from a real cgroup"
                    reads += 1
    finally:
        stop.set()
        thread.join(30)
        fs.remove(parent, recursive=True)
    assert not thread.is_alive(), "the churning thread did not stop"
    assert not failures, failures
    assert not fs.exists(parent)
    assert _open_fds() == fds_before
    # The churn really overlapped the walks: many cgroups made, many seen, some lost mid-read.
    assert made[0] >= min(CGROUPS, 1000), made
    assert walks > 10 and len(seen) > 100 and reads > 1000, (walks, len(seen), reads)
    assert gone > 0, "no cgroup vanished mid-read: the churn did not overlap the reads"
