"""senpai's claim on a real kernel: a workload with a large reclaimable page cache and a
smaller hot set runs with a far smaller footprint under memory_pressure, at little cost in
run time (senpai's README: a kernel build at 43% of its unlimited peak, +4.6% run time; the
issue's target: at most 50% and +5%). The same workload runs twice in fresh cgroups, on
disjoint regions of the scratch disk (so neither finds the other's cache): unlimited, then
under memory_pressure. Figures are reported; run time under TCG is too noisy to assert.
"""

from __future__ import annotations

from pathlib import Path

from enforce_workloads import applied, enforcing, wait_for_entry
from kernel_harness import Figures, MiB, Spawn, Workload, python_argv

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.memory import read_memory_events, read_memory_peak

CACHE_MIB = 160
PASSES = 2

POLICY = """
[enforcer]
managed_root = "{root}"
tick_seconds = "500ms"

[[rule]]
name = "senpai"
select = {{ cgroup = "{app}" }}

[rule.memory_pressure]
min = "16M"
interval = "1s"
"""

# A 24 MiB hot set, touched after every 8 MiB read; "run SKIP_MIB" reads CACHE_MIB of the
# disk from SKIP_MIB on (buffered: the page cache is charged here), PASSES times, and
# prints "done SECONDS".
CACHE_AND_HOT_SET = f"""
    import os, sys, time
    PAGE = 4096
    hot = bytearray(24 << 20)
    hot[::PAGE] = b"\\x01" * len(range(0, len(hot), PAGE))
    fd = os.open(sys.argv[1], os.O_RDONLY)
    print("ready", flush=True)
    skip = int(sys.stdin.readline().split()[1]) << 20
    start = time.monotonic()
    for _ in range({PASSES}):
        for i in range({CACHE_MIB}):
            os.pread(fd, 1 << 20, skip + (i << 20))
            if i % 8 == 0:
                hot[::PAGE] = b"\\x02" * len(range(0, len(hot), PAGE))
    print("done", time.monotonic() - start, flush=True)
"""


def run(workload: Workload, skip_mib: int) -> float:
    workload.send(f"run {skip_mib}")
    (seconds,) = workload.expect("done", 120)
    return float(seconds)


def test_cache_heavy_workload_footprint_under_memory_pressure(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    tmp_path: Path,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    disk, _ = scratch_disk
    fs.enable_controllers(cgroup, ["memory"])
    free_cg, squeezed_cg = f"{cgroup}/unlimited", f"{cgroup}/squeezed"
    for c in (free_cg, squeezed_cg):
        fs.create(c)

    # Both start at once (a Python start is seconds under TCG); each waits for its "run".
    free = spawn(python_argv(CACHE_AND_HOT_SET, disk), where=free_cg)
    squeezed = spawn(python_argv(CACHE_AND_HOT_SET, disk), where=squeezed_cg)
    free.expect("ready", 90)
    squeezed.expect("ready", 90)
    free_seconds = run(free, 0)
    free_peak = read_memory_peak(fs, free_cg)

    policy = POLICY.format(root=cgroup, app=squeezed_cg)
    with enforcing(fs, cgroup, tmp_path, policy) as loop:
        wait_for_entry(loop, applied("memory.high", squeezed_cg), 15, "the first memory.high")
        squeezed_seconds = run(squeezed, 256)
    squeezed_peak = read_memory_peak(fs, squeezed_cg)
    events = read_memory_events(fs, squeezed_cg)

    assert free_peak is not None and squeezed_peak is not None, "no memory.peak (< 5.19?)"
    assert free_peak > CACHE_MIB * MiB, f"the unlimited run cached only {free_peak} bytes"
    assert events is not None and events.oom_kill == 0, events
    ratio, slower = squeezed_peak / free_peak, squeezed_seconds / free_seconds - 1
    figures.note(
        f"cache {CACHE_MIB} MiB x{PASSES} + hot set 24 MiB: peak {free_peak / MiB:.0f} MiB "
        f"unlimited vs {squeezed_peak / MiB:.0f} MiB under memory_pressure = {ratio:.0%} "
        f"(target <= 50%); run time {free_seconds:.2f} s vs {squeezed_seconds:.2f} s = "
        f"{slower:+.1%} (target <= +5%; TCG timing, not asserted)"
    )
    print(f"\nSENPAI peak {ratio:.0%} of unlimited, run time {slower:+.1%}")
