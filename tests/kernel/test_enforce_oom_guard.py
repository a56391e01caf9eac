"""oom_guard on a real kernel: three cgroups share a pool whose memory.high is far below
what the leaking one wants. Throttled above memory.high (no swap: anonymous memory cannot be
reclaimed) while its page cache is reclaimed, the leaker stalls: the pool's memory ``full``
pressure climbs, and oom_guard freezes and kills the leaker, not the two
steady ones.

The victim is chosen by size; the steady cgroups sort before ``leak`` by name, so a tie or
a wrong score could not pick the leaker by accident."""

from __future__ import annotations

from pathlib import Path

from enforce_workloads import GROWER, applied, audit_of, enforcing, wait_for_entry
from kernel_harness import Figures, MiB, Spawn, populated, python_argv, wait_until

from enforce.actions import Outcome
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.memory import write_memory_limit

POLICY = """
[enforcer]
managed_root = "{root}"
tick_seconds = "500ms"

[[rule]]
name = "oomd"
select = {{ cgroup = "{pool}/*" }}

[rule.oom_guard]
watch = "{pool}"
full_avg10 = 0.1
duration = "1s"
choose = "size"
post_action_delay = "60s"
"""

# Reads the disk (buffered: the page cache is charged here and is what reclaim finds) in a
# loop while allocating 4 MiB of anonymous memory every round: a leak under reclaim.
LEAKER = """
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    kept, offset, span = [], 0, 256 << 20
    print("leaking", flush=True)
    while True:
        os.pread(fd, 1 << 20, offset)
        offset = (offset + (1 << 20)) % span
        if offset % (4 << 20) == 0:
            buf = bytearray(4 << 20)
            buf[::4096] = b"\\x01" * len(range(0, 4 << 20, 4096))
            kept.append(buf)
"""


def test_oom_guard_kills_the_leaker_and_spares_the_others(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    tmp_path: Path,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    disk, _ = scratch_disk
    fs.enable_controllers(cgroup, ["memory"])
    pool = f"{cgroup}/pool"
    fs.create(pool)
    fs.enable_controllers(pool, ["memory"])
    steady = {}
    for name in ("a-steady", "b-steady"):
        fs.create(f"{pool}/{name}")
        steady[name] = spawn(python_argv(GROWER), where=f"{pool}/{name}")
        steady[name].expect("ready", 90)
        steady[name].send(f"grow {12 * MiB} {12 * MiB} 0")
        steady[name].expect("grown", 30)
    leak = f"{pool}/leak"
    fs.create(leak)
    write_memory_limit(fs, pool, "memory.high", 96 * MiB)
    policy = POLICY.format(root=cgroup, pool=pool)
    with enforcing(fs, cgroup, tmp_path, policy) as loop:
        leaker = spawn(python_argv(LEAKER, disk), where=leak)
        leaker.expect("leaking", 90)
        kill = wait_for_entry(loop, applied("cgroup.kill", leak), 20, "the leaker's kill")
        wait_until(lambda: not populated(fs, leak), 10, f"{leak} to empty after the kill")
    entries = audit_of(loop)
    kills = [e for e in entries if e.file == "cgroup.kill"]
    freezes = [e for e in entries if e.file == "cgroup.freeze"]
    figures.note(f"oom_guard: {kill.reason}; inputs {dict(kill.inputs)}")
    assert [(e.cgroup, e.outcome) for e in kills] == [(leak, Outcome.APPLIED)]
    assert [(e.cgroup, e.outcome) for e in freezes] == [(leak, Outcome.APPLIED)]
    assert freezes[0].time <= kills[0].time
    assert not leaker.alive()
    for name, workload in steady.items():
        assert workload.alive(), f"{name} was killed too"
        assert populated(fs, f"{pool}/{name}")
