"""What the capture's workloads did, read back from the captured tree (conftest ``captured_fs``).

tools/capture_fixtures.py ran a throttled CPU hog, a memory.high squeeze, an OOM kill, O_DIRECT
io under io.max, a fork loop against pids.max and a frozen cgroup with an odd name; each
test asserts the figures that workload implies, through the read_* functions, and against
what CAPTURE.json recorded (exit status, dd's timings, the fork counts).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import MAX, CgroupFS, core, cpu, cpuset, io, memory, pids, pressure
from runtime.cgroupfs.formats import parse_int

# The cgroups tools/capture_fixtures.py builds, by what their workload does.
WEB = "capture/web"  # CPU hog under cpu.max
BATCH = "capture/batch"
SQUEEZED = "capture/batch/worker-1"  # working set above memory.high
DIRECT_IO = "capture/batch/worker-2"  # O_DIRECT dd under io.max
OOM = "capture/oom"  # OOM-killed under memory.max
FORKY = "capture/forky"  # fork loop against pids.max
ODD = "capture/odd name #1 (a+b)"  # frozen, pinned by cpuset
CONTROLLERS = {"cpuset", "cpu", "io", "memory", "pids"}


@pytest.fixture
def fs(captured_fs: CgroupFS) -> CgroupFS:
    return captured_fs


def _workload(capture: dict[str, Any], cgroup: str) -> dict[str, Any]:
    entry: dict[str, Any] = capture["cgroups"][cgroup]["workload"]
    return entry


def test_cpu_hog_is_throttled_to_its_quota(fs: CgroupFS) -> None:
    stat = cpu.read_cpu_stat(fs, WEB)
    limit = cpu.read_cpu_max(fs, WEB)
    burst = cpu.read_cpu_max_burst(fs, WEB)
    assert stat and limit and burst is not None and limit.quota is not MAX
    assert stat.nr_periods and stat.nr_throttled and stat.throttled_usec
    assert stat.nr_throttled <= stat.nr_periods
    # Most periods end throttled, and the hog never ran more than quota (+ burst) per period.
    assert stat.nr_throttled >= stat.nr_periods * 0.8
    assert stat.usage_usec <= (stat.nr_periods + 1) * (limit.quota + burst)
    events = core.read_cgroup_events(fs, WEB)
    assert events is not None and events.populated and not events.frozen


def test_oom_kill_under_memory_max(fs: CgroupFS, capture: dict[str, Any]) -> None:
    events = memory.read_memory_events(fs, OOM)
    assert events is not None
    assert events.max >= 1 and events.oom >= 1 and events.oom_kill >= 1
    assert events.oom_group_kill is not None and events.oom_group_kill >= 1  # oom.group=1
    assert memory.read_memory_oom_group(fs, OOM) is True
    peak, limit = memory.read_memory_peak(fs, OOM), memory.read_memory_limit(fs, OOM, "memory.max")
    assert isinstance(peak, int) and isinstance(limit, int) and 0 < peak <= limit
    # memory.events is hierarchical: the parent counts the child's kill too.
    parent = memory.read_memory_events(fs, "capture")
    assert parent is not None and parent.oom_kill >= events.oom_kill
    assert _workload(capture, OOM)["exit_status"] == -9  # SIGKILL


def test_memory_high_squeezes_but_never_kills(fs: CgroupFS, capture: dict[str, Any]) -> None:
    events = memory.read_memory_events(fs, SQUEEZED)
    high = memory.read_memory_limit(fs, SQUEEZED, "memory.high")
    peak = memory.read_memory_peak(fs, SQUEEZED)
    psi = pressure.read_pressure(fs, SQUEEZED, "memory")
    assert events is not None and isinstance(high, int) and isinstance(peak, int) and psi
    assert events.high > 0 and peak > high  # the working set went above memory.high
    assert events.max == events.oom == events.oom_kill == 0
    assert psi.some.total_usec > 0 and psi.full is not None
    assert psi.full.total_usec <= psi.some.total_usec
    assert _workload(capture, SQUEEZED)["exit_status"] == 0
    batch = memory.read_memory_events(fs, BATCH)
    assert batch is not None and batch.high >= events.high


def _dd_seconds(output: str) -> list[float]:
    return [float(s) for s in re.findall(r"copied, ([0-9.]+) s", output)]


def test_direct_io_is_counted_and_throttled(fs: CgroupFS, capture: dict[str, Any]) -> None:
    device = io.Device.parse(capture["disk"]["device"])
    stat = io.read_io_stat(fs, DIRECT_IO)
    limits = io.read_io_max(fs, DIRECT_IO)
    assert stat is not None and limits is not None
    assert stat[device].wbytes >= 8 << 20 and stat[device].wios > 0
    assert stat[device].rbytes >= 8 << 20 and stat[device].rios > 0
    limit = limits[device]
    assert isinstance(limit.wbps, int) and isinstance(limit.rbps, int)
    # dd's own clock: 8 MiB at wbps=4M and rbps=8M cannot finish faster (25% slack for the
    # throttler's first time slice).
    write_s, read_s = _dd_seconds(_workload(capture, DIRECT_IO)["output"])
    assert write_s >= 0.75 * (8 << 20) / limit.wbps
    assert read_s >= 0.75 * (8 << 20) / limit.rbps
    root = io.read_io_stat(fs, "")
    assert root is not None and root[device].wbytes >= stat[device].wbytes


def test_fork_loop_hits_pids_max(fs: CgroupFS, capture: dict[str, Any]) -> None:
    events = pids.read_pids_events(fs, FORKY)
    limit = pids.read_pids_max(fs, FORKY)
    assert events is not None and isinstance(limit, int)
    forked, refused = map(int, re.findall(r"\d+", _workload(capture, FORKY)["output"]))
    assert events.max == refused > 0
    assert forked + 1 == limit  # the forking process itself counts
    assert pids.read_pids_current(fs, FORKY) == limit == pids.read_pids_peak(fs, FORKY)


def test_frozen_cgroup_with_an_odd_name(fs: CgroupFS) -> None:
    assert fs.exists(ODD) and " " in ODD
    events = core.read_cgroup_events(fs, ODD)
    assert events is not None and events.frozen and events.populated
    assert fs.read_as(ODD, "cgroup.freeze", parse_int) == 1
    assert cpuset.read_cpuset(fs, ODD, "cpuset.cpus.effective") == frozenset({1})
    stat = cpu.read_cpu_stat(fs, ODD)
    assert stat is not None and stat.usage_usec > 0
    assert len(fs.procs(ODD)) == 1


def test_tree_shape(fs: CgroupFS, capture: dict[str, Any]) -> None:
    assert fs.controllers("") >= CONTROLLERS
    for parent in ("capture", BATCH):
        assert fs.subtree_control(parent) == CONTROLLERS
        assert fs.procs(parent) == []  # no internal processes
    stat = core.read_cgroup_stat(fs, "")
    assert stat is not None and stat.nr_descendants >= len(capture["files"]["cgroups"]) - 1
    assert list(fs.walk()) == capture["files"]["cgroups"]


def test_write_only_files_were_skipped(kernel_dir: Path, capture: dict[str, Any]) -> None:
    skipped = capture["files"]["skipped"]
    assert f"{WEB}/cgroup.kill" in skipped["write_only"]
    for key in [*skipped["write_only"], *skipped["read_failed"], *skipped["too_large"]]:
        assert not (kernel_dir / key).exists(), key
