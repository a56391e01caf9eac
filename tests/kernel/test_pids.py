"""pids.max makes fork fail with EAGAIN, and pids.events counts the refusal."""

from __future__ import annotations

from kernel_harness import START_TIMEOUT, Figures, Spawn, python_argv, wait_until
from workloads import FORKER

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.pids import (
    read_pids_current,
    read_pids_events,
    read_pids_max,
    write_pids_max,
)


def test_pids_max_makes_fork_fail_and_pids_events_counts_it(
    fs: CgroupFS, cgroup: str, spawn: Spawn, figures: Figures
) -> None:
    write_pids_max(fs, cgroup, 8)
    assert read_pids_max(fs, cgroup) == 8
    events = read_pids_events(fs, cgroup)
    assert events is not None and events.max == 0

    forker = spawn(python_argv(FORKER, "20"))
    kids, refusal = forker.expect("forked", START_TIMEOUT)

    in_cgroup = read_pids_current(fs, cgroup)
    events = read_pids_events(fs, cgroup)
    assert events is not None
    figures.note(
        f"pids.max 8: {kids} forks succeeded, then {refusal}; pids.current {in_cgroup}; "
        f"pids.events max {events.max}"
    )
    # The forker itself is one of the eight.
    assert (int(kids), refusal) == (7, "EAGAIN"), f"expected 7 forks then EAGAIN, got {kids}"
    assert in_cgroup == 8, f"pids.current: expected 8, observed {in_cgroup}"
    assert events.max == 1, f"pids.events max: expected 1 refusal, observed {events.max}"

    forker.send("release")
    assert forker.expect("reaped") == ["7"]
    assert forker.wait() == 0
    wait_until(lambda: read_pids_current(fs, cgroup) == 0, 10, "pids.current to drop to 0")
