"""memory.current counts what a workload touched; memory.max OOM-kills it; memory.high
throttles it without killing. The machine has no swap, so anonymous memory above a limit can
only be throttled (memory.high) or killed (memory.max), never reclaimed.
"""

from __future__ import annotations

import itertools
import signal
import time

from kernel_harness import (
    PAGE,
    START_TIMEOUT,
    Figures,
    MiB,
    Spawn,
    Workload,
    populated,
    python_argv,
)

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.limit_syntax import parse_size
from runtime.cgroupfs.memory import (
    MemoryEvents,
    read_memory_current,
    read_memory_events,
    read_memory_limit,
    read_memory_peak,
    read_memory_stat,
    write_memory_limit,
)
from runtime.cgroupfs.pressure import read_pressure

# Prints "ready"; then "touch TOTAL STEP" allocates TOTAL bytes in STEP-sized bytearrays,
# writing one byte in every page, reporting "progress BYTES SECONDS" after each step and
# "touched BYTES" at the end. It keeps everything it allocated until stdin closes.
ALLOCATOR = """
    import sys, time
    PAGE = int(sys.argv[1])
    kept = []
    print("ready", flush=True)
    for line in sys.stdin:
        total, step = (int(w) for w in line.split()[1:])
        done, start = 0, time.monotonic()
        while done < total:
            size = min(step, total - done)
            buf = bytearray(size)
            for i in range(0, size, PAGE):
                buf[i] = 1
            kept.append(buf)
            done += size
            print("progress", done, time.monotonic() - start, flush=True)
        print("touched", done, flush=True)
"""

TOUCH_HIGH = 18 * MiB


def allocator(spawn: Spawn) -> Workload:
    """The ALLOCATOR started in the test's cgroup, past its interpreter start-up."""
    workload = spawn(python_argv(ALLOCATOR, str(PAGE)))
    workload.expect("ready", START_TIMEOUT)
    return workload


def current(fs: CgroupFS, cgroup: str) -> int:
    value = read_memory_current(fs, cgroup)
    assert value is not None, f"{cgroup}: no memory.current"
    return value


def events(fs: CgroupFS, cgroup: str) -> MemoryEvents:
    value = read_memory_events(fs, cgroup)
    assert value is not None, f"{cgroup}: no memory.events"
    return value


def test_memory_current_tracks_bytes_touched(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    touch = parse_size("64M")
    assert isinstance(touch, int)
    workload = allocator(spawn)
    base = current(fs, cgroup)
    anon_base = (read_memory_stat(fs, cgroup) or {})["anon"]

    workload.send(f"touch {touch} {8 * MiB}")
    workload.expect("touched", 60)

    grown = current(fs, cgroup) - base
    anon = (read_memory_stat(fs, cgroup) or {})["anon"] - anon_base
    figures.note(f"memory.current before touching: {base / MiB:.1f} MiB (interpreter)")
    figures.within("memory.current growth vs bytes touched", grown, touch, 0.10, " B")
    figures.within("memory.stat anon growth vs bytes touched", anon, touch, 0.10, " B")
    peak = read_memory_peak(fs, cgroup)
    assert peak is not None and peak >= base + grown, f"memory.peak {peak} below memory.current"


def test_memory_max_oom_kills_the_allocator(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    limit = parse_size("48M")
    write_memory_limit(fs, cgroup, "memory.max", limit)
    assert read_memory_limit(fs, cgroup, "memory.max") == limit
    workload = allocator(spawn)
    assert events(fs, cgroup).oom_kill == 0

    workload.send(f"touch {256 * MiB} {4 * MiB}")
    status = workload.wait(60)
    workload.drain()  # the progress lines it printed before it was killed

    progress = [line for line in workload.transcript if line.startswith("progress")]
    reached = int(progress[-1].split()[1]) if progress else 0
    after = events(fs, cgroup)
    peak = read_memory_peak(fs, cgroup)
    figures.note(
        f"memory.max 48M: killed after touching {reached / MiB:.0f} MiB; memory.events "
        f"max={after.max} oom={after.oom} oom_kill={after.oom_kill}; memory.peak "
        f"{(peak or 0) / MiB:.1f} MiB"
    )
    assert status == -signal.SIGKILL, f"expected the OOM killer's SIGKILL, got status {status}"
    assert after.oom_kill == 1, f"memory.events oom_kill: expected 1, observed {after.oom_kill}"
    assert after.max > 0 and after.oom >= 1, f"memory.events: {after}"
    assert reached < 48 * MiB, f"touched {reached} bytes past memory.max"
    assert peak is not None and peak <= 48 * MiB, f"memory.peak {peak} above memory.max"
    assert not populated(fs, cgroup)


def test_memory_high_throttles_without_killing(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    workload = allocator(spawn)
    # 16 MiB of room above what the interpreter already uses, page-aligned so it reads back.
    high = (current(fs, cgroup) + 16 * MiB) // PAGE * PAGE
    write_memory_limit(fs, cgroup, "memory.high", high)
    assert read_memory_limit(fs, cgroup, "memory.high") == high
    stall0 = read_pressure(fs, cgroup, "memory")
    assert stall0 is not None

    # 2 MiB past memory.high: enough to be throttled for a second or two. The kernel's delay
    # grows with the square of the overage (mem_cgroup_handle_over_high): 4 MiB took ~17 s.
    t0 = time.monotonic()
    workload.send(f"touch {TOUCH_HIGH} {MiB}")
    workload.expect("touched", 120)
    took = time.monotonic() - t0

    after = events(fs, cgroup)
    usage = current(fs, cgroup)
    stall1 = read_pressure(fs, cgroup, "memory")
    assert stall1 is not None
    stalled = stall1.some.total_usec - stall0.some.total_usec
    steps = [line.split() for line in workload.transcript if line.startswith("progress")]
    per_mib = [float(b[2]) - float(a[2]) for a, b in itertools.pairwise(steps)]
    figures.note(
        f"memory.high {high / MiB:.1f} MiB: usage {usage / MiB:.1f} MiB, "
        f"{TOUCH_HIGH / MiB:.0f} MiB touched in "
        f"{took:.2f} s, memory.pressure some +{stalled / 1e6:.2f} s; seconds per MiB: "
        + " ".join(f"{s:.2f}" for s in per_mib)
        + f"; memory.events high={after.high} oom_kill={after.oom_kill}"
    )
    assert workload.alive(), f"the allocator died under memory.high: {workload.transcript[-5:]}"
    assert (after.oom, after.oom_kill) == (0, 0), f"memory.high must never OOM: {after}"
    assert usage > high, f"memory.current {usage} not above memory.high {high}"
    assert after.high > 0, f"memory.events high did not count: {after}"
    assert stalled >= 100_000, (
        f"expected the kernel to throttle the allocator (memory.pressure some total +>=0.1 s), "
        f"observed +{stalled} us"
    )
