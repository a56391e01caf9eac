"""Whole-cgroup verbs and the life of a cgroup: cgroup.kill, freeze/thaw, enable_controllers
under "no internal processes", a cgroup removed under a reader, and walking through churn."""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Callable

import pytest
from kernel_harness import (
    BUSYBOX,
    Figures,
    Spawn,
    busybox_sh,
    cgroup_of,
    frozen,
    gone_or_zombie,
    populated,
    wait_until,
)

from runtime.cgroupfs import CgroupFS, CgroupGone, WriteRejected, join
from runtime.cgroupfs.core import read_cgroup_events
from runtime.cgroupfs.cpu import read_cpu_stat
from runtime.cgroupfs.io import read_io_stat
from runtime.cgroupfs.memory import read_memory_current
from runtime.cgroupfs.pids import read_pids_current, write_pids_max
from runtime.cgroupfs.pressure import read_pressure

SLEEP = [BUSYBOX, "sleep", "1000"]


def all_pids(fs: CgroupFS, cgroup: str) -> list[int]:
    return [pid for cg in fs.walk(cgroup) for pid in fs.procs(cg)]


def test_workload_runs_inside_its_cgroup_from_the_start(
    fs: CgroupFS, cgroup: str, spawn: Spawn
) -> None:
    sleeper = spawn(SLEEP)
    assert fs.procs(cgroup) == [sleeper.pid]
    assert cgroup_of(sleeper.pid) == cgroup


def test_cgroup_kill_kills_the_whole_process_tree(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    inner = join(cgroup, "inner")
    fs.create(inner)
    # A shell with a child and a subshell with two grandchildren, and a nested cgroup with a
    # shell and its child: seven processes, five of them not ours to wait for.
    top = spawn(busybox_sh("sleep 1000 & (sleep 1000 & sleep 1000 & wait) & wait"))
    nested = spawn(busybox_sh("sleep 1000 & wait"), where=inner)

    def seven() -> list[int] | None:
        pids = all_pids(fs, cgroup)
        return pids if len(pids) == 7 else None

    pids = wait_until(seven, 30, "seven processes in the subtree")
    assert len(fs.procs(inner)) == 2

    fs.kill(cgroup)
    t0 = time.monotonic()
    wait_until(lambda: not populated(fs, cgroup), 10, "cgroup.events populated 0")
    figures.note(f"cgroup.kill: 7 processes gone in {time.monotonic() - t0:.3f} s")

    assert not populated(fs, inner)
    assert (top.wait(), nested.wait()) == (-signal.SIGKILL, -signal.SIGKILL)
    survivors = [pid for pid in pids if not gone_or_zombie(pid)]
    assert survivors == [], f"still running after cgroup.kill: {survivors}"
    assert all_pids(fs, cgroup) == []


def test_freeze_stops_progress_and_thaw_resumes_it(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    ticker = spawn(busybox_sh("i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"))
    while int(ticker.expect("tick", 30)[0]) < 3:  # running steadily
        pass

    fs.freeze(cgroup)
    wait_until(lambda: frozen(fs, cgroup), 10, "cgroup.events frozen 1")
    ticks = [3] + [int(line.split()[1]) for line in ticker.drain() if line.startswith("tick")]
    cpu_before = read_cpu_stat(fs, cgroup)
    time.sleep(1.0)  # looking for the absence of progress: nothing to poll for
    late = ticker.drain()
    cpu_after = read_cpu_stat(fs, cgroup)
    assert cpu_before is not None and cpu_after is not None
    assert late == [], f"the frozen ticker still printed {late}"
    assert cpu_after.usage_usec == cpu_before.usage_usec, (
        f"cpu.stat usage grew by {cpu_after.usage_usec - cpu_before.usage_usec} us while frozen"
    )
    assert ticker.alive()

    last = ticks[-1]
    fs.thaw(cgroup)
    wait_until(lambda: not frozen(fs, cgroup), 10, "cgroup.events frozen 0")
    resumed = int(ticker.expect("tick", 10)[0])
    figures.note(f"freeze: ticker held at {last} for 1 s (cpu.stat unchanged), resumed {resumed}")
    assert resumed > last


def test_enable_controllers_moves_processes_into_the_leaf_first(
    fs: CgroupFS, cgroup: str, spawn: Spawn
) -> None:
    sleeper = spawn(SLEEP)
    wanted = ["cpu", "io", "memory", "pids"]
    # The rule is real: with a process inside, the kernel refuses a domain controller (memory,
    # io). Threaded ones (cpu, pids) alone would be accepted: the rule is about domains.
    with pytest.raises(WriteRejected) as refused:
        fs.write(cgroup, "cgroup.subtree_control", "+memory")
    assert refused.value.errno == errno.EBUSY
    assert fs.subtree_control(cgroup) == set()

    assert sorted(fs.enable_controllers(cgroup, wanted)) == wanted

    leaf = join(cgroup, "supervisor")
    assert fs.subtree_control(cgroup) == set(wanted)
    assert fs.procs(cgroup) == []
    assert fs.procs(leaf) == [sleeper.pid]
    assert cgroup_of(sleeper.pid) == leaf
    assert set(wanted) <= fs.controllers(leaf)
    assert sleeper.alive()
    # The leaf's own limits are in force: the sleeper counts against pids.max there.
    write_pids_max(fs, leaf, 1)
    assert read_pids_current(fs, leaf) == 1
    assert fs.enable_controllers(cgroup, wanted) == []


def test_removed_cgroup_reads_as_gone(fs: CgroupFS, cgroup: str) -> None:
    held = join(cgroup, "doomed")
    fs.create(held)
    assert read_cpu_stat(fs, held) is not None
    fs.remove(held)

    readers: dict[str, Callable[[], object]] = {
        "read": lambda: fs.read(held, "cgroup.events"),
        "read_cgroup_events": lambda: read_cgroup_events(fs, held),
        "read_cpu_stat": lambda: read_cpu_stat(fs, held),
        "read_memory_current": lambda: read_memory_current(fs, held),
        "read_io_stat": lambda: read_io_stat(fs, held),
        "read_pressure": lambda: read_pressure(fs, held, "cpu"),
        "procs": lambda: fs.procs(held),
        "controllers": lambda: fs.controllers(held),
        "write": lambda: write_pids_max(fs, held, 5),
        "freeze": lambda: fs.freeze(held),
    }
    for name, reader in readers.items():
        with pytest.raises(CgroupGone) as gone:
            reader()
        assert gone.value.cgroup == held, name
    assert not fs.exists(held)
    assert fs.children(held) == []
    assert list(fs.walk(held)) == []
    fs.remove(held)  # already gone: fine
    # A file this kernel lacks, in a cgroup that exists, is None rather than gone.
    assert fs.read(cgroup, "memory.no_such_file") is None


def start_churn(fs: CgroupFS, cgroup: str, spawn: Spawn) -> None:
    """A shell creating and removing cgroups under ``cgroup`` as fast as it can. Names are
    never reused, so a cgroup seen once and then missing was really removed."""
    script = "i=0; while :; do i=$((i+1)); mkdir -p a$i/b d$i; rmdir a$i/b a$i d$i; done"
    spawn(busybox_sh(f"cd {fs.path(cgroup)} && {script}"))
    wait_until(lambda: fs.children(cgroup), 30, "the churner's first mkdir")


def test_walk_never_raises_while_cgroups_come_and_go(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    start_churn(fs, cgroup, spawn)
    walks = saw_churn = gone = reads = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        found = list(fs.walk(cgroup))
        walks += 1
        assert found[0] == cgroup
        assert all(cg.startswith(cgroup + "/") for cg in found[1:]), found
        saw_churn += len(found) > 1
        for cg in found:
            for read in (read_cpu_stat, read_cgroup_events, read_memory_current):
                reads += 1
                try:
                    read(fs, cg)
                except CgroupGone:
                    gone += 1
    figures.note(
        f"churn: {walks} walks, {saw_churn} saw churned cgroups, {reads} reads, {gone} gone"
    )
    assert saw_churn > 0, "the walks never overlapped the churn: the test proved nothing"


def test_a_vanishing_cgroup_reads_as_gone_not_as_a_missing_file(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    """cpu.stat and cgroup.events exist in every cgroup: a read of a cgroup being removed
    gives its value or CgroupGone, never None (which means "this kernel lacks the file")."""
    start_churn(fs, cgroup, spawn)
    outcomes = {"value": 0, "gone": 0}
    absent: list[str] = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        for name in fs.children(cgroup):
            cg = join(cgroup, name)
            for read, file in ((read_cpu_stat, "cpu.stat"), (read_cgroup_events, "cgroup.events")):
                try:
                    value = read(fs, cg)
                except CgroupGone:
                    outcomes["gone"] += 1
                    continue
                if value is None:
                    absent.append(f"{cg}/{file}")
                else:
                    outcomes["value"] += 1
    figures.note(f"vanishing cgroups: {outcomes}, None {len(absent)} times")
    assert outcomes["gone"] > 0, "no read ever met a removed cgroup: the test proved nothing"
    assert absent == [], f"read as absent (None) while being removed: {absent[:5]}"
