"""cpu_quota raises a throttled busy loop's cpu.max toward its bound, never past it;
pids_guard holds a fork storm at pids.current + headroom, never past its bound."""

from __future__ import annotations

import time
from pathlib import Path

from enforce_workloads import FORK_STORM, SPINNER, applied, audit_of, enforcing, wait_for_entry
from kernel_harness import Figures, Spawn, python_argv, wait_until

from enforce.actions import Outcome
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.cpu import CpuMax, parse_cpu_max, read_cpu_max, write_cpu_max
from runtime.cgroupfs.pids import read_pids_current, read_pids_events, read_pids_max

CPU_POLICY = """
[enforcer]
managed_root = "{root}"
tick_seconds = "500ms"

[[rule]]
name = "quota"
select = {{ cgroup = "{app}" }}

[rule.cpu_quota]
min = "0.1"
max = "0.8"
target_throttled = 0.1
raise_after = 1
step_up = 1.0
cooldown = "1s"
"""

PIDS_POLICY = """
[enforcer]
managed_root = "{root}"
tick_seconds = "500ms"

[[rule]]
name = "forks"
select = {{ cgroup = "{app}" }}

[rule.pids_guard]
headroom = 8
min = 16
max = 64
hold = "30s"
cooldown = "1s"
"""


def test_cpu_quota_raises_a_throttled_busy_loop_to_its_bound(
    fs: CgroupFS, cgroup: str, spawn: Spawn, tmp_path: Path, figures: Figures
) -> None:
    fs.enable_controllers(cgroup, ["cpu"])
    app = f"{cgroup}/app"
    fs.create(app)
    write_cpu_max(fs, app, CpuMax(10_000, 100_000))  # 0.1 core
    spin = spawn(python_argv(SPINNER), where=app)
    spin.expect("spinning", 90)
    with enforcing(fs, cgroup, tmp_path, CPU_POLICY.format(root=cgroup, app=app)) as loop:
        wait_until(
            lambda: (c := read_cpu_max(fs, app)) is not None and c.cores == 0.8,
            18,
            "cpu.max to reach the 0.8-core bound",
            0.1,
        )
        time.sleep(1.5)  # still throttled at the bound: it must stay there
        final = read_cpu_max(fs, app)
    writes = [e for e in audit_of(loop) if e.file == "cpu.max" and e.outcome is Outcome.APPLIED]
    cores = [parse_cpu_max(e.new, "audit").cores or 0.0 for e in writes]
    figures.note(f"cpu_quota: cpu.max cores 0.1 -> {' -> '.join(f'{c:g}' for c in cores)}")
    assert final is not None and final.cores == 0.8
    assert cores == sorted(cores) and len(cores) >= 3, cores
    assert max(cores) <= 0.8
    assert spin.alive()


def test_pids_guard_holds_a_fork_storm(
    fs: CgroupFS, cgroup: str, spawn: Spawn, tmp_path: Path, figures: Figures
) -> None:
    fs.enable_controllers(cgroup, ["pids"])
    app = f"{cgroup}/app"
    fs.create(app)
    storm = spawn(python_argv(FORK_STORM), where=app)
    storm.expect("ready", 90)
    with enforcing(fs, cgroup, tmp_path, PIDS_POLICY.format(root=cgroup, app=app)) as loop:
        first = wait_for_entry(loop, applied("pids.max", app), 15, "the first pids.max")
        storm.send("go 500")
        forked, refusal = storm.expect("forked", 60)
        time.sleep(2.0)  # rounds after the storm: the limit is held, not raised to match
        limit, current = read_pids_max(fs, app), read_pids_current(fs, app)
        events = read_pids_events(fs, app)
    writes = [e for e in audit_of(loop) if e.file == "pids.max" and e.outcome is Outcome.APPLIED]
    figures.note(
        f"pids_guard: first pids.max {first.new}; the storm forked {forked} of 500 "
        f"({refusal}); pids.max now {limit}, pids.current {current}, "
        f"pids.events max={events.max if events else '?'}; writes {[e.new for e in writes]}"
    )
    assert refusal == "EAGAIN", f"the storm was not refused: {forked} forks, {refusal}"
    assert int(forked) < 64
    assert isinstance(limit, int) and limit <= 64
    assert events is not None and events.max > 0
    assert all(int(e.new) <= 64 for e in writes)
