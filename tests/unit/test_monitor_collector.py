"""The collector, its discovery and its kept-open files.

Against the captured 6.1 tree (every figure equals the captured file; rates between two
polls of an edited copy) and against the host's real cgroup2 (pread on a kept fd gives fresh
values; a removed cgroup's fds give ENODEV even after re-creation; thousands of cgroups
churned during polling raise nothing and leak no fd).
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from monitor.collector import (
    EVENTS,
    LIMITS,
    PRESSURE,
    STATS,
    WITNESSES,
    Collector,
    CollectorConfig,
)
from monitor.discovery import Discovery, compile_glob
from monitor.naming import Namer
from runtime.cgroupfs import MAX, CgroupFS, CgroupGone
from runtime.cgroupfs.cpu import CpuMax, parse_cpu_stat
from runtime.cgroupfs.io import Device, IoMax
from runtime.cgroupfs.openfiles import FD_RESERVE, OpenFiles, fd_bound

MiB = 1 << 20
CHURN_CGROUPS = 3000
CHURN_LIVE = 64  # churned cgroups alive at once
CHURN_POLLS = 20  # polls the churn overlaps at least
CHURN_PER_POLL = 32  # cgroups created (and as many removed) per poll at most
CHURN_DEADLINE_S = 60.0


def collector(fs: CgroupFS, tmp_path: Path, **config: Any) -> Collector:
    return Collector(fs, CollectorConfig(**config), Namer(tmp_path / "no-state"))


def _captured(root: Path, cgroup: str, name: str, parse: Any) -> Any:
    path = root / cgroup / name
    return parse(path.read_text(), str(path)) if path.is_file() else None


# -- the captured tree ------------------------------------------------------------------------


def test_every_figure_equals_the_captured_file(
    captured_fs: CgroupFS, capture: dict[str, Any], tmp_path: Path
) -> None:
    with collector(captured_fs, tmp_path) as c:
        sample = c.poll().sample
    assert list(sample.cgroups) == capture["files"]["cgroups"]
    assert sample.errors == {}
    root = captured_fs.root
    for path, cg in sample.cgroups.items():
        for name, field, parse in (*STATS, *EVENTS):
            assert getattr(cg, field) == _captured(root, path, name, parse), (path, name)
        for name, resource, parse in PRESSURE:
            assert cg.pressure.get(resource) == _captured(root, path, name, parse), (path, name)
        for name, field, parse in LIMITS:
            assert getattr(cg.limits, field) == _captured(root, path, name, parse), (path, name)


def test_the_captured_workloads_figures(captured_fs: CgroupFS, tmp_path: Path) -> None:
    """What CAPTURE.json says each workload did and which limits were set."""
    with collector(captured_fs, tmp_path) as c:
        cgroups = c.poll().sample.cgroups
    web, forky, oom = cgroups["capture/web"], cgroups["capture/forky"], cgroups["capture/oom"]
    assert web.limits.cpu_max == CpuMax(20_000, 100_000) and web.limits.cpu_weight == 200
    assert web.cpu is not None and web.cpu.nr_throttled and web.nr_procs == 1
    assert forky.limits.pids_max == 8 and forky.pids_current == 8 and forky.nr_procs == 8
    assert forky.pids_events is not None and forky.pids_events.max == 25  # "refused 25"
    # One OOM under memory.oom.group 1: one group kill (of every task, so oom_kill counts 2).
    events = oom.memory_events
    assert events is not None and (events.oom, events.oom_group_kill) == (1, 1)
    assert oom.limits.memory_max == 32 * MiB and oom.nr_procs == 0
    worker2 = cgroups["capture/batch/worker-2"]
    vda = Device(254, 0)
    assert worker2.limits.io_max == {vda: IoMax(rbps=8 * MiB, wbps=4 * MiB, wiops=400)}
    assert worker2.io is not None and worker2.io[vda].wbytes >= 8 * MiB
    assert cgroups["capture/batch"].limits.memory_high is MAX
    assert cgroups[""].memory_current is None and cgroups[""].events is None  # root lacks them


def _rewrite(path: Path, old: str, new: str) -> None:
    """Edit in place, as the kernel's files change: kept fds see the new text."""
    text = path.read_text()
    assert old in text, (path, old)
    with open(path, "r+") as f:
        f.truncate(0)
        f.write(text.replace(old, new))


def test_rates_between_two_polls(captured_fs: CgroupFS, tmp_path: Path) -> None:
    root = captured_fs.root
    with collector(captured_fs, tmp_path) as c:
        first = c.poll()
        web = first.sample.cgroups["capture/web"]
        assert web.cpu is not None
        _rewrite(
            root / "capture/web/cpu.stat",
            f"usage_usec {web.cpu.usage_usec}\n",
            f"usage_usec {web.cpu.usage_usec + 300_000}\n",
        )
        _rewrite(root / "capture/batch/worker-2/io.stat", "wbytes=8388608", "wbytes=12582912")
        second = c.poll()
        dt = second.sample.monotonic - first.sample.monotonic
        assert second.seq == 2 and second.collect_seconds > 0
        model = second.models["capture/web"]
        assert model.interval_seconds == dt
        assert model.cpu_cores == pytest.approx(0.3 / dt, rel=1e-12)
        io = second.models["capture/batch/worker-2"]
        assert io.io_write_bytes_per_second == pytest.approx(4 * MiB / dt, rel=1e-12)
        # Untouched cgroups: the very same sample object, and a rate of zero.
        assert second.sample.cgroups["capture/oom"] is first.sample.cgroups["capture/oom"]
        assert second.models["capture/oom"].cpu_cores == 0.0
        changed = second.sample.cgroups["capture/web"]
        assert changed is not web and changed.memory_stat is web.memory_stat
        _rewrite(
            root / "capture/web/cpu.stat",
            f"usage_usec {web.cpu.usage_usec + 300_000}\n",
            "usage_usec 5\n",
        )
        assert c.poll().models["capture/web"].cpu_cores is None  # a counter went backwards


def test_a_bad_file_costs_one_figure_and_is_counted(captured_fs: CgroupFS, tmp_path: Path) -> None:
    web = captured_fs.root / "capture/web"
    (web / "memory.stat").write_text("anon lots\n")
    (web / "pids.current").unlink()
    (web / "pids.current").mkdir()  # a read of it fails with EISDIR
    with collector(captured_fs, tmp_path) as c:
        sample = c.poll().sample
    assert sample.errors == {"parse": 1, "read": 1}
    cg = sample.cgroups["capture/web"]
    assert cg.memory_stat is None and cg.pids_current is None
    assert cg.cpu is not None and cg.memory_current is not None


def test_fds_are_bounded(captured_fs: CgroupFS, tmp_path: Path) -> None:
    with (
        collector(captured_fs, tmp_path) as free,
        collector(captured_fs, tmp_path, fd_limit=20) as tight,
    ):
        everything = free.poll().sample.cgroups
        tight.poll()
        opens = tight.opens
        second = tight.poll().sample.cgroups
        assert tight.open_fds == 20 and tight.fd_bound == 20
        assert tight.opens > opens  # files past the bound are opened, read, closed each poll
        assert free.open_fds > 20 and second == everything
    assert free.open_fds == tight.open_fds == 0


def test_fd_bound_is_clipped_to_the_rlimit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert fd_bound(10) == min(10, soft - FD_RESERVE)
    assert fd_bound(10**9) == soft - FD_RESERVE
    with pytest.raises(ValueError, match="-1"):
        fd_bound(-1)


def test_missing_files_are_probed_again_when_the_controllers_change(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    root = captured_fs.root
    with collector(captured_fs, tmp_path) as c:
        assert c.poll().sample.cgroups[""].memory_current is None
        (root / "memory.current").write_text("123\n")
        assert c.poll().sample.cgroups[""].memory_current is None  # remembered as missing
        _rewrite(root / "cgroup.controllers", "\n", " extra\n")
        assert c.poll().sample.cgroups[""].memory_current == 123


def _write_unseen(path: Path, text: str) -> None:
    """Change a file's bytes through a shared mapping: unlike write(2), a store to a mapped
    page raises no inotify event, as a write through another cgroup namespace's mount of
    cgroup2 raises none on this one's inodes."""
    old = path.read_bytes()
    assert len(text) == len(old), "same length, so the mapping covers it"
    with path.open("r+b") as f, mmap.mmap(f.fileno(), len(old)) as m:
        m[:] = text.encode()


def test_a_written_limit_is_read_at_the_next_poll(captured_fs: CgroupFS, tmp_path: Path) -> None:
    weight = captured_fs.root / "capture/web/cpu.weight"
    with collector(captured_fs, tmp_path, recheck_every=10**6) as c:
        first = c.poll().sample.cgroups["capture/web"]
        assert c.watched == len(first.path and c.poll().sample.cgroups)
        again = c.poll().sample.cgroups["capture/web"]
        assert again.limits is first.limits  # nothing written: not re-read
        weight.write_text("300\n")
        assert c.poll().sample.cgroups["capture/web"].limits.cpu_weight == 300


def test_an_unseen_change_is_read_within_recheck_every_polls(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    weight = captured_fs.root / "capture/web/cpu.weight"
    with collector(captured_fs, tmp_path, recheck_every=10**6) as lazy:
        lazy.poll()
        _write_unseen(weight, "300\n")
        assert lazy.poll().sample.cgroups["capture/web"].limits.cpu_weight == 200  # stale
        lazy.limits_changed("/capture/web/")
        assert lazy.poll().sample.cgroups["capture/web"].limits.cpu_weight == 300
    with collector(captured_fs, tmp_path, recheck_every=3) as every3:
        every3.poll()
        _write_unseen(weight, "400\n")
        seen = [every3.poll().sample.cgroups["capture/web"].limits.cpu_weight for _ in range(3)]
        assert seen[-1] == 400 and seen == sorted(seen)


def test_event_files_are_read_when_notified_and_only_trusted_when_kept_open(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    events = captured_fs.root / "capture/oom/memory.events"
    text = events.read_text()
    for bound, expected in ((10**5, 1), (0, 7)):
        _write_unseen(events, text)
        with collector(captured_fs, tmp_path, recheck_every=10**6, fd_limit=bound) as c:
            c.poll()
            _write_unseen(events, text.replace("oom 1", "oom 7"))
            unseen = c.poll().sample.cgroups["capture/oom"].memory_events
            assert unseen is not None and unseen.oom == expected, bound
            events.write_text(text.replace("oom 1", "oom 9"))  # notified, as kernfs does
            seen = c.poll().sample.cgroups["capture/oom"].memory_events
            assert seen is not None and seen.oom == 9
        events.write_text(text)


def test_without_a_watch_every_file_is_read_every_poll(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    weight = captured_fs.root / "capture/web/cpu.weight"
    for config in ({"watch": False}, {"recheck_every": 1}):
        with collector(captured_fs, tmp_path, **config) as c:
            c.poll()
            assert c.watched == 0
            _write_unseen(weight, "500\n")
            assert c.poll().sample.cgroups["capture/web"].limits.cpu_weight == 500
            _write_unseen(weight, "200\n")


def test_a_controller_enabled_in_the_parent_adds_the_childs_files(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    web = captured_fs.root / "capture/web"
    controllers = (web / "cgroup.controllers").read_text()
    (web / "cgroup.controllers").write_text(controllers.replace("memory", "      "))
    with collector(captured_fs, tmp_path, recheck_every=10**6) as c:
        (web / "memory.swap.current").unlink()
        assert c.poll().sample.cgroups["capture/web"].swap_current is None
        # The kernel adds the file and lists the controller without any notification...
        (web / "memory.swap.current").write_text("4096\n")
        _write_unseen(web / "cgroup.controllers", controllers)
        assert c.poll().sample.cgroups["capture/web"].swap_current is None  # known absent
        # ... when the parent's cgroup.subtree_control is written, which the watch sees.
        subtree = captured_fs.root / "capture/cgroup.subtree_control"
        subtree.write_text(subtree.read_text())
        assert c.poll().sample.cgroups["capture/web"].swap_current == 4096


@pytest.mark.parametrize(
    "config",
    [{"recheck_every": 0}, {"fd_limit": -1}, {"max_depth": -1}, {"subtree": "../x"}],
)
def test_bad_configs_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=str(next(iter(config.values())))):
        CollectorConfig(**config)


# -- discovery --------------------------------------------------------------------------------

CAPTURED = [
    "", "capture", "capture/batch", "capture/batch/worker-1", "capture/batch/worker-2",
    "capture/forky", "capture/odd name #1 (a+b)", "capture/oom", "capture/web",
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, CAPTURED),
        ({"include": ["capture/*"]}, [p for p in CAPTURED if p.count("/") == 1]),
        ({"include": ["/**/worker-*/"]}, CAPTURED[3:5]),
        ({"exclude": ["capture/batch/**"]}, [p for p in CAPTURED if "batch" not in p]),
        ({"exclude": ["capture/batch"]}, [p for p in CAPTURED if p != "capture/batch"]),
        ({"include": ["capture/**"], "exclude": ["**/*[ #]*"]}, CAPTURED[1:6] + CAPTURED[7:]),
        ({"max_depth": 1}, ["", "capture"]),
        ({"subtree": "capture/batch", "max_depth": 0}, ["capture/batch"]),
        ({"subtree": "/capture/batch/"}, CAPTURED[2:5]),
        ({"subtree": "capture/nothing-here"}, []),
    ],
)
@pytest.mark.parametrize("with_stat", [False, True], ids=["listing", "cgroup.stat"])
def test_discovery_selects(
    captured_fs: CgroupFS, kwargs: dict[str, Any], expected: list[str], with_stat: bool
) -> None:
    """The same cgroups whether every directory is listed or only those whose cgroup.stat
    counts descendants."""
    with OpenFiles(captured_fs.root) as files:
        discovery = Discovery(captured_fs, **kwargs, files=files if with_stat else None)
        assert discovery.poll() == expected
    assert set(expected) <= set(discovery.inodes)  # and the cgroups only walked through
    assert all(os.stat(captured_fs.root / p).st_ino == i for p, i in discovery.inodes.items())
    assert discovery.errors == 0


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("**", ["", "a", "a/b/c"], []),
        ("a/**", ["a", "a/b", "a/b/c"], ["ab", "b/a"]),
        ("**/*.scope", ["x.scope", "a/b/x.scope"], ["x.scope/y", "x.scopes"]),
        ("a/**/c", ["a/c", "a/b/c", "a/b/b/c"], ["a/b/cd"]),
        ("a/*/c", ["a/b/c"], ["a/c", "a/b/d/c"]),
        ("a?c", ["abc"], ["a/c", "ac"]),
        ("[!a]*", ["b", "bcd"], ["a", "ab", "b/c"]),
        ("[a-c]x", ["bx"], ["dx"]),
        ("x[", ["x["], ["x"]),
        ("", [""], ["a"]),
        ("**/**", ["a/b"], []),
    ],
)
def test_globs(glob: str, matches: list[str], misses: list[str]) -> None:
    pattern = compile_glob(glob)
    assert [m for m in matches if not pattern.fullmatch(m)] == []
    assert [m for m in misses if pattern.fullmatch(m)] == []


def test_discovery_refuses_bad_arguments(captured_fs: CgroupFS) -> None:
    with pytest.raises(ValueError, match="max_depth -1"):
        Discovery(captured_fs, max_depth=-1)
    with pytest.raises(TypeError, match="sequences of globs"):
        Discovery(captured_fs, include="**")


# -- the host's real cgroup2 ------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _busy(fs: CgroupFS, cgroup: str) -> subprocess.Popen[bytes]:
    """A busy loop started inside ``cgroup``."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "while True: pass"],
        preexec_fn=lambda: fs.move(os.getpid(), cgroup),
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _usage(files: OpenFiles, cgroup: str) -> int:
    stat = files.parsed(cgroup, "cpu.stat", parse_cpu_stat)
    assert stat is not None
    return stat.usage_usec


def test_pread_on_a_kept_fd_gives_fresh_values(host: tuple[CgroupFS, str]) -> None:
    fs, parent = host
    proc = _busy(fs, parent)
    try:
        with OpenFiles(fs.root) as files:
            first = _usage(files, parent)
            time.sleep(0.3)
            second = _usage(files, parent)
            assert files.opens == 1 and files.open_count == 1  # one open, two reads
        assert second - first > 50_000, (first, second)
    finally:
        _stop(proc)


def test_a_removed_cgroup_is_gone_even_once_re_created(host: tuple[CgroupFS, str]) -> None:
    fs, parent = host
    cgroup = f"{parent}/victim"
    fs.create(cgroup)
    proc = _busy(fs, cgroup)
    with OpenFiles(fs.root, limit=3) as files:
        time.sleep(0.2)
        before = _usage(files, cgroup)
        for name in ("cgroup.events", "cpu.pressure", "io.pressure", "memory.pressure"):
            assert files.read(cgroup, name)
        assert files.open_count == 3  # the fourth file was read without being kept
        _stop(proc)
        fs.remove(cgroup)
        fs.create(cgroup)  # same path, new cgroup: the kept fds still point at the old one
        with pytest.raises(CgroupGone) as gone:
            files.read(cgroup, "cpu.stat")
        assert gone.value.cgroup == cgroup and files.open_count == 0
        assert _usage(files, cgroup) < before  # reopened: the new cgroup's counter
        fs.remove(cgroup)
        with pytest.raises(CgroupGone):
            files.read(cgroup, "cpu.stat")
        with pytest.raises(CgroupGone):
            files.read(cgroup, "cgroup.events")  # never kept: open(2) says ENOENT
        assert files.open_count == 0


def test_a_re_created_cgroup_is_re_read_without_rates(
    host: tuple[CgroupFS, str], tmp_path: Path
) -> None:
    fs, parent = host
    cgroup = f"{parent}/again"
    fs.create(cgroup)
    proc = _busy(fs, cgroup)
    with collector(fs, tmp_path, subtree=parent) as c:
        time.sleep(0.3)
        c.poll()
        busy = c.poll().sample.cgroups[cgroup]
        _stop(proc)
        fs.remove(cgroup)
        fs.create(cgroup)
        snap = c.poll()
    fresh = snap.sample.cgroups[cgroup]
    assert busy.cpu is not None and fresh.cpu is not None
    assert busy.cpu.usage_usec > 100_000 and fresh.cpu.usage_usec < busy.cpu.usage_usec
    assert snap.models[cgroup].cpu_cores is None  # a new cgroup: no rate against the old
    assert snap.models[parent].cpu_cores is not None
    assert snap.sample.errors == {}


def test_a_leaf_that_gains_a_child_is_walked_into(
    host: tuple[CgroupFS, str], tmp_path: Path
) -> None:
    fs, parent = host
    with collector(fs, tmp_path, subtree=parent) as c:
        assert list(c.poll().sample.cgroups) == [parent]
        alone = c.open_fds
        # The subtree's top also keeps its witness files open: its parent is not watched, so
        # they are read every poll; its children's are read when the watch says so.
        witnesses = sum((fs.path(parent) / name).exists() for name in WITNESSES)
        fs.create(f"{parent}/x/y")
        assert list(c.poll().sample.cgroups) == [parent, f"{parent}/x", f"{parent}/x/y"]
        assert c.open_fds == alone + 2 * (alone - witnesses)
        fs.remove(f"{parent}/x", recursive=True)
        assert list(c.poll().sample.cgroups) == [parent]
        assert c.open_fds == alone  # the removed cgroups' fds are closed


def _churn(fs: CgroupFS, parent: str, stop: threading.Event, counts: list[int]) -> None:
    """Create parent/aN/b and remove the oldest, CHURN_LIVE at a time, until CHURN_CGROUPS
    were made and the poller polled CHURN_POLLS times. At most CHURN_PER_POLL are made per
    poll, so that polls see the churn whatever the relative speed of the two threads."""
    live: list[str] = []
    i = 0
    while (counts[0] < CHURN_CGROUPS or counts[1] < CHURN_POLLS) and not stop.is_set():
        if i % CHURN_PER_POLL == 0:
            polls = counts[1]
            while counts[1] == polls and not stop.is_set():
                time.sleep(0.0005)
        fs.create(f"{parent}/a{i}/b")
        counts[0] += 2
        live.append(f"{parent}/a{i}")
        if len(live) > CHURN_LIVE:
            fs.remove(live.pop(0), recursive=True)
        i += 1
    for name in live:
        fs.remove(name, recursive=True)


@pytest.mark.parametrize("fd_limit", [4096, 40])
def test_churn_while_polling(host: tuple[CgroupFS, str], tmp_path: Path, fd_limit: int) -> None:
    fs, parent = host
    fds_before = _fds()
    stop, counts, failures = threading.Event(), [0, 0], []  # cgroups made, polls

    def churner() -> None:
        try:
            _churn(fs, parent, stop, counts)
        except BaseException as e:  # reported by the test thread below
            failures.append(e)

    thread = threading.Thread(target=churner, daemon=True)
    errors: Counter[str] = Counter()
    seen: set[str] = set()
    c = collector(fs, tmp_path, subtree=parent, fd_limit=fd_limit)
    deadline = time.monotonic() + CHURN_DEADLINE_S
    try:
        thread.start()
        while thread.is_alive() and time.monotonic() < deadline:
            snap = c.poll()
            counts[1] += 1
            errors.update(snap.sample.errors)
            seen.update(snap.sample.cgroups)
            assert c.open_fds <= c.fd_bound
            assert set(snap.models) == set(snap.names) == set(snap.sample.cgroups)
    finally:
        stop.set()
        thread.join(30)
        c.close()
    assert not failures, failures
    assert _fds() == fds_before
    assert set(errors) <= {"gone"}, errors
    assert counts[0] >= CHURN_CGROUPS and counts[1] >= CHURN_POLLS, counts
    assert len(seen) > 2 * CHURN_LIVE, len(seen)
    assert errors["gone"] > 0, "no cgroup vanished mid-poll: the churn did not overlap"


def test_only_files_read_every_poll_or_notified_keep_an_fd(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    root = captured_fs.root
    # cgroup.stat: discovery reads it to skip listing cgroups without children.
    hot = ["cgroup.stat", *(name for name, _, _ in (*STATS, *EVENTS, *PRESSURE))]
    with collector(captured_fs, tmp_path) as c:
        cgroups = c.poll().sample.cgroups
        c.poll()
        kept = sum((root / p / name).is_file() for p in cgroups for name in hot)
        assert c.open_fds == kept
    with collector(captured_fs, tmp_path, watch=False) as c:
        c.poll()
        assert c.open_fds > kept  # limits and witnesses are read every poll: kept too


def test_discovery_reuses_the_children_of_settled_cgroups(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    discovery = Discovery(captured_fs)
    first = discovery.poll()
    (captured_fs.root / "capture" / "late").mkdir()
    assert discovery.poll(settled=lambda path: True) == first  # told nothing changed
    assert "capture/late" in discovery.poll(settled=lambda path: path != "capture")
    assert "capture/late" in discovery.poll()


def test_cgroups_made_and_removed_are_seen_at_the_next_poll_through_the_watch(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    late = captured_fs.root / "capture" / "late"
    with collector(captured_fs, tmp_path, recheck_every=10**6) as c:
        c.poll()
        c.poll()
        late.mkdir()
        (late / "cpu.stat").write_text("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
        assert c.poll().sample.cgroups["capture/late"].cpu is not None
        (late / "cpu.stat").unlink()
        late.rmdir()
        assert "capture/late" not in c.poll().sample.cgroups
        assert c.watched == len(c.poll().sample.cgroups)
