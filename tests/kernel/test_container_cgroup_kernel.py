"""ContainerCgroups on a real cgroup v2: every limit of `corral run` is written and read back
from the kernel's files, memory.max, pids.max and cpu.max are enforced on real workloads,
io.max is set on the scratch disk, update changes the files of a running container, and
remove leaves nothing.

The containers live under ``corral-test/containers`` (a parent of these tests alone, made by
ContainerCgroups itself), never under a real ``corral`` parent.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from kernel_harness import (
    START_TIMEOUT,
    Figures,
    MiB,
    Workload,
    busybox_sh,
    gone_or_zombie,
    populated,
    python_argv,
    wait_until,
)
from workloads import FORKER

from runtime.cgroupfs import CgroupFS, InvalidLimit, join
from runtime.cgroupfs.cpu import CpuStat, read_cpu_stat
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.memory import read_memory_events, read_memory_peak
from runtime.cgroupfs.pids import read_pids_events
from runtime.container.cgroup import CONTROLLERS, ContainerCgroups
from runtime.container.limits import ContainerLimits, parse_limits

# Below conftest.TEST_PARENT, which the session fixture makes with every controller and
# destroys at the end of the run.
PARENT = "corral-test/containers"

# Prints "ready"; on "go" allocates 1 MiB bytearrays up to argv[1] MiB, touching every page
# and printing "progress MIB" after each, and keeps them.
ALLOCATOR = """
    import sys
    kept = []
    print("ready", flush=True)
    sys.stdin.readline()
    for mib in range(1, int(sys.argv[1]) + 1):
        buf = bytearray(1 << 20)
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        kept.append(buf)
        print("progress", mib, flush=True)
    print("survived", flush=True)
    sys.stdin.readline()
"""

Start = Callable[[Sequence[str], str], Workload]


@pytest.fixture
def containers(fs: CgroupFS) -> Iterator[ContainerCgroups]:
    cgroups = ContainerCgroups(fs, parent=PARENT)
    yield cgroups
    for child in fs.children(PARENT):
        cgroups.remove(join(PARENT, child))


@pytest.fixture
def start(fs: CgroupFS) -> Iterator[Start]:
    """``start(argv, cgroup)``: a Workload inside ``cgroup``, stopped and reaped afterwards."""
    started: list[Workload] = []

    def run(argv: Sequence[str], cgroup: str) -> Workload:
        started.append(Workload(argv, fs, cgroup))
        return started[-1]

    yield run
    for workload in started:
        workload.stop()


def read(fs: CgroupFS, path: str, name: str) -> str:
    text = fs.read(path, name)
    assert text is not None, f"{path}: no {name}"
    return text.strip()


def test_every_limit_is_written_and_reads_back(
    fs: CgroupFS,
    containers: ContainerCgroups,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    disk, device = scratch_disk
    limits = parse_limits(
        memory="64m",
        memory_high="48m",
        memory_swap="96m",
        cpus="1.5",
        cpu_weight="500",
        cpuset_cpus="1",
        pids_limit="50",
        device_write_bps=[f"{disk}:2m"],
        device_read_iops=[f"{disk}:100"],
    )
    containers.check(limits)
    path = containers.create("all", limits)

    assert fs.subtree_control(PARENT) >= set(CONTROLLERS)
    assert fs.procs(PARENT) == [], "the parent never holds processes"
    files = {name: read(fs, path, name) for name in containers.read_limits(path)}
    figures.note("read back: " + "; ".join(f"{k}={v}" for k, v in files.items()))
    assert files == {
        "cpuset.cpus": "1",
        "cpu.weight": "500",
        "cpu.max": "150000 100000",
        "pids.max": "50",
        "memory.max": str(64 * MiB),
        "memory.swap.max": str(32 * MiB),  # docker's memory+swap 96m minus memory 64m
        "memory.high": str(48 * MiB),
        "io.max": f"{device} rbps=max wbps={2 * MiB} riops=100 wiops=max",
    }
    assert read(fs, path, "cpuset.cpus.effective") == "1"
    assert containers.read_limits(path)["io.max"] == {
        str(device): {"rbps": "max", "wbps": 2 * MiB, "riops": 100, "wiops": "max"}
    }
    assert containers.oom_killed(path) is False
    containers.remove(path)
    assert not fs.exists(path)


def test_memory_max_oom_kills_and_oom_killed_says_so(
    fs: CgroupFS, containers: ContainerCgroups, start: Start, figures: Figures
) -> None:
    # memory-swap equal to memory: no swap, as docker reads it (and the machine has none).
    path = containers.create("oom", parse_limits(memory="32m", memory_swap="32m"))
    assert read(fs, path, "memory.swap.max") == "0"
    allocator = start(python_argv(ALLOCATOR, "128"), path)
    allocator.expect("ready", START_TIMEOUT)
    assert containers.oom_killed(path) is False

    allocator.send("go")
    status = allocator.wait(120)
    allocator.drain()
    progress = [int(line.split()[1]) for line in allocator.transcript if line.startswith("prog")]
    events = read_memory_events(fs, path)
    peak = read_memory_peak(fs, path)
    figures.note(
        f"--memory 32m: killed (status {status}) after {progress[-1] if progress else 0} MiB; "
        f"memory.events {events}; memory.peak {(peak or 0) / MiB:.1f} MiB"
    )
    assert status == -signal.SIGKILL, f"expected the OOM killer's SIGKILL, got {status}"
    assert "survived" not in allocator.transcript
    assert containers.oom_killed(path) is True
    assert events is not None and events.oom_kill == 1
    assert peak is not None and peak <= 32 * MiB


def test_pids_limit_makes_fork_fail(
    fs: CgroupFS, containers: ContainerCgroups, start: Start, figures: Figures
) -> None:
    path = containers.create("pids", parse_limits(pids_limit="8"))
    forker = start(python_argv(FORKER, "20"), path)
    kids, refusal = forker.expect("forked", START_TIMEOUT)
    events = read_pids_events(fs, path)
    figures.note(f"--pids-limit 8: {kids} forks, then {refusal}; pids.events {events}")
    assert (int(kids), refusal) == (7, "EAGAIN"), "the forker itself is the eighth process"
    assert events is not None and events.max == 1
    forker.send("release")
    assert forker.expect("reaped") == ["7"]


def cpu_stat(fs: CgroupFS, path: str) -> CpuStat:
    stat = read_cpu_stat(fs, path)
    assert stat is not None and stat.nr_throttled is not None, f"{path}: no throttling figures"
    return stat


def test_cpus_throttle_a_busy_loop(
    fs: CgroupFS, containers: ContainerCgroups, start: Start, figures: Figures
) -> None:
    path = containers.create("cpu", parse_limits(cpus="0.2"))
    start(busybox_sh("while :; do :; done"), path)
    wait_until(lambda: cpu_stat(fs, path).usage_usec > 50_000, 60, "the busy loop to run")

    before, t0 = cpu_stat(fs, path), time.monotonic()
    time.sleep(3.0)  # the measurement window: the loop spins meanwhile
    after, wall = cpu_stat(fs, path), time.monotonic() - t0

    throttled = (after.nr_throttled or 0) - (before.nr_throttled or 0)
    periods = (after.nr_periods or 0) - (before.nr_periods or 0)
    figures.note(f"--cpus 0.2: {throttled} of {periods} periods throttled in {wall:.2f} s")
    assert throttled > 0, "cpu.stat nr_throttled did not grow"
    used = after.usage_usec - before.usage_usec
    figures.within("--cpus 0.2: usage vs 0.2 x wall", used, 0.2 * wall * 1e6, 0.25, " us")


def test_update_changes_the_files_of_a_running_container(
    fs: CgroupFS,
    containers: ContainerCgroups,
    start: Start,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    disk, device = scratch_disk
    path = containers.create("upd", parse_limits(memory="64m", cpus="0.5", pids_limit="20"))
    sleeper = start(busybox_sh("echo up; exec sleep 1000"), path)
    sleeper.expect("up", START_TIMEOUT)

    containers.update(
        path,
        parse_limits(
            memory="128m",
            memory_swap="160m",
            cpus="1",
            cpu_weight="50",
            pids_limit="30",
            device_write_bps=[f"{disk}:4m"],
            update=True,
        ),
    )
    expected = {
        "memory.max": str(128 * MiB),
        "memory.swap.max": str(32 * MiB),
        "cpu.max": "100000 100000",
        "cpu.weight": "50",
        "pids.max": "30",
        "io.max": f"{device} rbps=max wbps={4 * MiB} riops=max wiops=max",
        "memory.high": "max",  # not given: untouched
    }
    assert {name: read(fs, path, name) for name in expected} == expected

    # --memory-swap alone: the memory part is the cgroup's memory.max (128m).
    containers.update(path, parse_limits(memory_swap="192m", update=True))
    assert read(fs, path, "memory.swap.max") == str(64 * MiB)
    # memory.high alone, written without blocking; io keys not given are kept.
    containers.update(
        path, parse_limits(memory_high="100m", device_read_iops=[f"{disk}:50"], update=True)
    )
    assert read(fs, path, "memory.high") == str(100 * MiB)
    assert read(fs, path, "io.max") == f"{device} rbps=max wbps={4 * MiB} riops=50 wiops=max"

    # Everything is checked before anything is written.
    with pytest.raises(InvalidLimit, match="--cpuset-cpus"):
        containers.update(path, ContainerLimits(pids_limit=40, cpuset_cpus="0-63"))
    assert read(fs, path, "pids.max") == "30"
    assert sleeper.alive() and fs.procs(path) == [sleeper.pid]
    figures.note("after update: " + str(containers.read_limits(path)))


@pytest.mark.parametrize("use_kill_file", [None, False], ids=["cgroup.kill", "sigkill-each-pid"])
def test_remove_leaves_nothing(
    fs: CgroupFS, containers: ContainerCgroups, start: Start, use_kill_file: bool | None
) -> None:
    cgroups = ContainerCgroups(fs, PARENT, use_kill_file=use_kill_file)
    path = cgroups.create("gone", parse_limits(memory="64m", pids_limit="50"))
    fs.create(f"{path}/inner")  # a sub-cgroup the container made
    outer = start(busybox_sh("sleep 1000 & sleep 1000 & echo up; wait"), path)
    inner = start(busybox_sh("sleep 1000 & echo up; wait"), f"{path}/inner")
    outer.expect("up", START_TIMEOUT)
    inner.expect("up", START_TIMEOUT)
    pids = fs.procs(path) + fs.procs(f"{path}/inner")
    assert len(pids) == 5

    cgroups.remove(path)
    assert not fs.exists(path)
    assert fs.children(PARENT) == []
    assert outer.wait(10) == -signal.SIGKILL and inner.wait(10) == -signal.SIGKILL
    assert all(gone_or_zombie(pid) for pid in pids)
    assert not populated(fs, PARENT)
    cgroups.remove(path)  # again: gone is fine
