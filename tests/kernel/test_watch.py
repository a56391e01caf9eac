"""What runtime.cgroupfs.watch and the collector rely on, on the real kernel: inotify on a
cgroup directory names the files written (limit files included) and the files kernfs
notifies (cgroup.events, memory.events, pids.events) while they are held open; and the
collector, told to trust only those notices (recheck_every huge), still sees every change at
the next poll."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kernel_harness import PAGE, START_TIMEOUT, MiB, Spawn, busybox_sh, python_argv, wait_until
from test_monitor_figures import ALLOCATOR
from workloads import FORKER

from monitor.collector import Collector, CollectorConfig
from monitor.naming import Namer
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.memory import write_memory_limit
from runtime.cgroupfs.pids import write_pids_max
from runtime.cgroupfs.watch import ChangeWatch

# kernfs notifications come from a workqueue, at most one per 10 ms per file
# (cgroup_file_notify): a change is queued well within this after it happened.
NOTICE_SECONDS = 0.1
SLEEPER = busybox_sh("sleep 600")


def lazy(fs: CgroupFS, cgroup: str, tmp_path: Path) -> Collector:
    """A collector that re-reads limits and event files only when the watch says so."""
    return Collector(fs, CollectorConfig(subtree=cgroup, recheck_every=10**6), Namer(tmp_path))


def test_writes_and_kernfs_notices_reach_a_directory_watch(
    fs: CgroupFS, cgroup: str, spawn: Spawn
) -> None:
    held = os.open(fs.path(cgroup) / "cgroup.events", os.O_RDONLY)
    try:
        with ChangeWatch(fs.root) as watch:
            assert watch.watch(cgroup)
            write_memory_limit(fs, cgroup, "memory.high", 64 * MiB)
            fs.write(cgroup, "pids.max", "100")
            assert watch.drain().of(cgroup) >= {"memory.high", "pids.max"}
            sleeper = spawn(SLEEPER)
            wait_until(lambda: "populated 1" in (fs.read(cgroup, "cgroup.events") or ""), 10, "")
            time.sleep(NOTICE_SECONDS)
            assert "cgroup.events" in watch.drain().of(cgroup)
            sleeper.stop()
            wait_until(lambda: "populated 0" in (fs.read(cgroup, "cgroup.events") or ""), 10, "")
            time.sleep(NOTICE_SECONDS)
            assert watch.drain().of(cgroup) == {"cgroup.events"}
            child = f"{cgroup}/child"
            fs.create(child)
            assert watch.watch(child) and len(watch) == 2
            fs.remove(child)
            assert watch.drain().of(child) == set()
            # kernfs ends no watch on rmdir (no IN_IGNORED): the watcher drops it itself.
            assert len(watch) == 2
            watch.retain([cgroup])
            assert len(watch) == 1 and not watch.watching(child)
    finally:
        os.close(held)


def test_a_lazy_collector_sees_limits_events_and_new_files_at_the_next_poll(
    fs: CgroupFS, cgroup: str, spawn: Spawn, tmp_path: Path
) -> None:
    child = f"{cgroup}/child"
    fs.create(child)
    fs.write(cgroup, "cgroup.subtree_control", "-memory")
    with lazy(fs, cgroup, tmp_path) as c:
        first = c.poll().sample.cgroups
        assert first[child].memory_current is None and first[cgroup].limits.memory_high is not None
        write_memory_limit(fs, cgroup, "memory.high", 96 * MiB)
        write_pids_max(fs, cgroup, 50)
        fs.write(cgroup, "cgroup.subtree_control", "+memory")
        now = c.poll().sample.cgroups
        assert now[cgroup].limits.memory_high == 96 * MiB and now[cgroup].limits.pids_max == 50
        assert now[child].memory_current is not None  # the file appeared with the controller
        sleeper = spawn(SLEEPER, child)
        wait_until(lambda: "populated 1" in (fs.read(child, "cgroup.events") or ""), 10, "")
        time.sleep(NOTICE_SECONDS)
        now = c.poll().sample.cgroups
        for path in (cgroup, child):
            assert now[path].events is not None and now[path].events.populated, path
        made = f"{cgroup}/made-later"
        fs.create(made)
        assert c.poll().sample.cgroups[made].cpu is not None  # mkdir seen through the watch
        fs.remove(made)
        assert made not in c.poll().sample.cgroups  # and rmdir
        sleeper.stop()
        fs.remove(child)
        wait_until(lambda: "populated 0" in (fs.read(cgroup, "cgroup.events") or ""), 10, "")
        time.sleep(NOTICE_SECONDS)
        now = c.poll().sample.cgroups
        assert child not in now and now[cgroup].events is not None
        assert not now[cgroup].events.populated
        assert c.watched == 1


def test_a_lazy_collector_counts_refused_forks_and_oom_kills(
    fs: CgroupFS, cgroup: str, spawn: Spawn, tmp_path: Path
) -> None:
    write_pids_max(fs, cgroup, 6)
    write_memory_limit(fs, cgroup, "memory.max", 48 * MiB)
    with lazy(fs, cgroup, tmp_path) as c:
        before = c.poll().sample.cgroups[cgroup]
        forker = spawn(python_argv(FORKER, "20"))
        forker.expect("forked", START_TIMEOUT)
        time.sleep(NOTICE_SECONDS)
        forked = c.poll().sample.cgroups[cgroup]
        forker.send("release")
        assert forker.wait() == 0
        allocator = spawn(python_argv(ALLOCATOR, str(PAGE)))
        allocator.expect("ready", START_TIMEOUT)
        allocator.send(f"touch {256 * MiB}")
        allocator.wait(60)
        time.sleep(NOTICE_SECONDS)
        killed = c.poll().sample.cgroups[cgroup]
    assert before.pids_events is not None and before.pids_events.max == 0
    assert forked.pids_events is not None and forked.pids_events.max >= 1
    assert before.memory_events is not None and before.memory_events.oom_kill == 0
    assert killed.memory_events is not None and killed.memory_events.oom_kill == 1
