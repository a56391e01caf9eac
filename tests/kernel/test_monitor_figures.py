"""What the collector reports matches what workloads did, on a real cgroup v2 kernel.

Every figure here is observed through ``Collector.poll()`` snapshots (raw samples and the
models built from them), never by reading the files directly: this is the path the
exporter, the dashboard and the enforcer see. The collector keeps its fds open across polls,
so these tests also show that pread on a kept fd gives the kernel's fresh figures (``opens``
does not move between the polls that measure).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from kernel_harness import (
    BUSYBOX,
    PAGE,
    START_TIMEOUT,
    Figures,
    MiB,
    Spawn,
    Workload,
    busybox_sh,
    python_argv,
    wait_until,
)
from workloads import DIRECT_WRITER, FORKER

from monitor.collector import Collector, CollectorConfig
from monitor.model import CgroupModel
from monitor.naming import Namer
from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.cpu import CpuMax, write_cpu_max
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.memory import write_memory_limit
from runtime.cgroupfs.pids import write_pids_max

BUSY_LOOP = busybox_sh("while :; do :; done")

# "touch BYTES" allocates BYTES in 4 MiB bytearrays, writing a byte in every page, then
# prints "touched BYTES"; progress lines go out after each step so an OOM kill shows where.
ALLOCATOR = """
    import sys
    page, kept = int(sys.argv[1]), []
    print("ready", flush=True)
    for line in sys.stdin:
        total, done = int(line.split()[1]), 0
        while done < total:
            buf = bytearray(min(4 << 20, total - done))
            for i in range(0, len(buf), page):
                buf[i] = 1
            kept.append(buf)
            done += len(buf)
            print("progress", done, flush=True)
        print("touched", done, flush=True)
"""


# argv[1] extra threads blocked on an event; "threads N" once they all run.
THREADS = """
    import sys, threading
    stop = threading.Event()
    for _ in range(int(sys.argv[1])):
        threading.Thread(target=stop.wait).start()
    print("threads", threading.active_count(), flush=True)
    sys.stdin.readline()
    stop.set()
"""


def collector(fs: CgroupFS, cgroup: str, tmp_path: Path) -> Collector:
    return Collector(fs, CollectorConfig(subtree=cgroup), Namer(tmp_path))


def sample(snap: Snapshot, cgroup: str) -> CgroupSample:
    assert cgroup in snap.sample.cgroups, f"{cgroup} missing from poll {snap.seq}"
    return snap.sample.cgroups[cgroup]


def model(snap: Snapshot, cgroup: str) -> CgroupModel:
    return snap.models[cgroup]


def cpu_usage(c: Collector, cgroup: str) -> int:
    cpu = sample(c.poll(), cgroup).cpu
    assert cpu is not None, f"{cgroup}: no cpu.stat in the sample"
    return cpu.usage_usec


def measure(c: Collector, seconds: float) -> tuple[Snapshot, Snapshot]:
    """Two polls ``seconds`` apart; no file is opened between them (all fds kept)."""
    first = c.poll()
    opens = c.opens
    time.sleep(seconds)  # the measurement window: the workload runs meanwhile
    second = c.poll()
    assert c.opens == opens, "a file was reopened between two polls: fds were not kept"
    return first, second


def test_busy_loop_is_one_core_and_cpu_max_holds_it(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures, tmp_path: Path
) -> None:
    with collector(fs, cgroup, tmp_path) as c:
        spawn(BUSY_LOOP)
        wait_until(lambda: cpu_usage(c, cgroup) > 50_000, 60, "the busy loop to run")
        _, free = measure(c, 2.0)
        unlimited = model(free, cgroup)
        write_cpu_max(fs, cgroup, CpuMax(50_000, 100_000))
        c.poll()  # the limit is seen at the next poll; the rates settle over the next window
        _, held = measure(c, 2.0)
        limited = model(held, cgroup)
        fds = c.open_fds
    assert unlimited.cpu_cores is not None and limited.cpu_cores is not None
    figures.note(f"collector: {fds} fds kept for one cgroup")
    figures.within("busy loop: model cpu_cores x100", unlimited.cpu_cores * 100, 100, 0.15, "%")
    assert unlimited.throttled_ratio == 0.0 and unlimited.cpu_limit_ratio is None
    assert sample(held, cgroup).limits.cpu_max == CpuMax(50_000, 100_000)
    figures.within("cpu.max 0.5: model cpu_cores x100", limited.cpu_cores * 100, 50, 0.20, "%")
    assert limited.cpu_limit_ratio is not None and limited.throttled_ratio is not None
    figures.note(
        f"cpu.max 0.5: cpu_limit_ratio {limited.cpu_limit_ratio:.2f}, "
        f"throttled_ratio {limited.throttled_ratio:.2f}"
    )
    assert limited.cpu_limit_ratio > 0.8 and limited.throttled_ratio > 0.5


def test_allocator_bytes_show_in_memory_figures(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures, tmp_path: Path
) -> None:
    touch = 64 * MiB
    allocator = spawn(python_argv(ALLOCATOR, str(PAGE)))
    allocator.expect("ready", START_TIMEOUT)
    with collector(fs, cgroup, tmp_path) as c:
        before = c.poll()
        allocator.send(f"touch {touch}")
        allocator.expect("touched", 60)
        after = c.poll()
    a, b = sample(before, cgroup), sample(after, cgroup)
    assert a.memory_current and b.memory_current and a.memory_stat and b.memory_stat
    figures.within(
        "sample memory_current growth", b.memory_current - a.memory_current, touch, 0.10, " B"
    )
    figures.within(
        "sample memory.stat anon growth",
        b.memory_stat["anon"] - a.memory_stat["anon"],
        touch,
        0.10,
        " B",
    )
    ws_a, ws_b = model(before, cgroup).working_set_bytes, model(after, cgroup).working_set_bytes
    assert ws_a is not None and ws_b is not None
    figures.within("model working_set_bytes growth", ws_b - ws_a, touch, 0.10, " B")
    assert b.memory_peak is not None and b.memory_peak >= b.memory_current


def test_bytes_written_to_the_disk_show_in_io_stat(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    scratch_disk: tuple[str, Device],
    figures: Figures,
    tmp_path: Path,
) -> None:
    path, device = scratch_disk
    size = 16 * MiB
    writer = spawn(python_argv(DIRECT_WRITER, path, str(256 * 1024)))
    writer.expect("ready", START_TIMEOUT)
    with collector(fs, cgroup, tmp_path) as c:
        before = c.poll()
        opens = c.opens
        writer.send(f"write {size}")
        writer.expect("wrote", 120)
        after = c.poll()
        assert c.opens == opens  # io.stat, empty at first, regenerated through the same fd
    assert sample(before, cgroup).io == {}, "io.stat was not empty before the writes"
    io = sample(after, cgroup).io
    assert io is not None and device in io, f"no {device} line in io.stat: {io}"
    figures.within(f"sample io.stat {device} wbytes", io[device].wbytes, size, 0.05, " B")
    rate = model(after, cgroup)
    assert rate.io_write_bytes_per_second is not None and rate.interval_seconds is not None
    moved = rate.io_write_bytes_per_second * rate.interval_seconds
    assert moved == pytest.approx(io[device].wbytes, rel=1e-9)


def test_process_and_task_counts_are_exact(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures, tmp_path: Path
) -> None:
    write_pids_max(fs, cgroup, 8)
    with collector(fs, cgroup, tmp_path) as c:
        forker = spawn(python_argv(FORKER, "20"))
        kids, refusal = forker.expect("forked", START_TIMEOUT)
        forked = sample(c.poll(), cgroup)
        forker.send("release")
        forker.expect("reaped")
        assert forker.wait() == 0
        threaded = spawn(python_argv(THREADS, "3"))
        assert threaded.expect("threads", START_TIMEOUT) == ["4"]
        threads = sample(c.poll(), cgroup)
        threaded.send("stop")
        assert threaded.wait() == 0
        empty = sample(c.poll(), cgroup)
    assert forked.pids_events is not None and forked.limits.pids_max == 8
    figures.note(
        f"pids.max 8: forker + {kids} children, then {refusal}; nr_procs {forked.nr_procs}, "
        f"pids_current {forked.pids_current}, pids.events max {forked.pids_events.max}; "
        f"3 threads: nr_procs {threads.nr_procs}, pids_current {threads.pids_current}"
    )
    assert (int(kids), refusal) == (7, "EAGAIN")
    assert (forked.nr_procs, forked.pids_current, forked.pids_events.max) == (8, 8, 1)
    # cgroup.procs lists processes; pids.current counts tasks (threads included).
    assert (threads.nr_procs, threads.pids_current) == (1, 4)
    assert (empty.nr_procs, empty.pids_current) == (0, 0)
    assert empty.events is not None and not empty.events.populated


def test_an_oom_kill_is_counted_once(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures, tmp_path: Path
) -> None:
    write_memory_limit(fs, cgroup, "memory.max", 48 * MiB)
    allocator: Workload = spawn(python_argv(ALLOCATOR, str(PAGE)))
    allocator.expect("ready", START_TIMEOUT)
    with collector(fs, cgroup, tmp_path) as c:
        before = sample(c.poll(), cgroup)
        allocator.send(f"touch {256 * MiB}")
        status = allocator.wait(60)
        polls = [sample(c.poll(), cgroup) for _ in range(3)]
        time.sleep(1.0)
        polls.append(sample(c.poll(), cgroup))
    assert status == -signal.SIGKILL, f"expected the OOM killer's SIGKILL, got {status}"
    assert before.memory_events is not None and before.memory_events.oom_kill == 0
    kills = [p.memory_events.oom_kill if p.memory_events else None for p in polls]
    figures.note(f"memory.max 48M: memory.events oom_kill over four polls after the kill: {kills}")
    assert kills == [1, 1, 1, 1]
    assert polls[-1].nr_procs == 0 and polls[-1].limits.memory_max == 48 * MiB


def read_disk(spawn: Spawn, path: str, skip_mib: int, mib: int) -> None:
    """Buffered read of ``mib`` MiB of the disk from ``skip_mib`` MiB on, in the cgroup."""
    argv = [BUSYBOX, "dd", f"if={path}", "of=/dev/null", "bs=1M", f"skip={skip_mib}"]
    status = spawn([*argv, f"count={mib}"]).wait(120)
    assert status == 0, f"dd exited {status}"


def test_memory_pressure_shows_in_the_pressure_figures(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    scratch_disk: tuple[str, Device],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """Page cache reclaimed under memory.max 16M while dd reads 192 MiB: memory stalls."""
    path, _ = scratch_disk
    with collector(fs, cgroup, tmp_path) as c:
        start = c.poll()
        read_disk(spawn, path, 0, 64)  # unlimited: the cache just grows
        free = c.poll()
        write_memory_limit(fs, cgroup, "memory.max", 16 * MiB)
        read_disk(spawn, path, 64, 192)
        squeezed = c.poll()

    def stalled(snap: Snapshot) -> int:
        return sample(snap, cgroup).pressure["memory"].some.total_usec

    some_free, some = stalled(free) - stalled(start), stalled(squeezed) - stalled(free)
    ratio = model(squeezed, cgroup).pressure_memory_some
    events = sample(squeezed, cgroup).memory_events
    assert events is not None and ratio is not None
    figures.note(
        f"memory.pressure some total: +{some_free} us reading 64 MiB unlimited, +{some} us "
        f"reading 192 MiB under memory.max 16M (model pressure_memory_some {ratio:.3f}); "
        f"memory.events max {events.max}"
    )
    assert events.max > 0 and some > some_free and ratio > 0
