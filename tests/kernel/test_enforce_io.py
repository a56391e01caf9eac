"""io_pressure on a real kernel: while a protected cgroup waits on the scratch disk (O_DIRECT
writes put its tasks in iowait, which io.pressure counts as ``some`` stall), the noisy
cgroup's io.max is capped; once the protected cgroup is quiet for ``hold``, the cap is
lifted again. The noisy writer's rate under the cap is measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from enforce_workloads import audit_of, enforcing, wait_for_entry
from kernel_harness import Figures, MiB, Spawn, Workload, python_argv
from workloads import DIRECT_WRITER

from enforce.actions import AuditEntry, Outcome
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device, IoMax, read_io_max

CHUNK = 256 * 1024
CAP = 2 * MiB

POLICY = """
[enforcer]
managed_root = "{root}"
tick_seconds = "500ms"

[[rule]]
name = "shield"
select = {{ cgroup = "{noisy}" }}

[rule.io_pressure]
protect = ["{protected}"]
devices = ["{device}"]
target = 0.2
restore_below = 0.05
wbps = "2M"
hold = "5s"
"""
# hold: the protected writer finishes in well under a second once the noisy one is capped;
# the cap must outlast the noisy writer's measured 4 MiB at 2 MiB/s (~2 s), or the measured
# rate would include writes made after the cap was lifted.


def io_max_of(fs: CgroupFS, cgroup: str, device: Device) -> IoMax:
    table = read_io_max(fs, cgroup)
    assert table is not None, f"{cgroup}: no io.max"
    return table.get(device, IoMax())


def rate(writer: Workload, size: int) -> float:
    writer.send(f"write {size}")
    done, seconds = writer.expect("wrote", 120)
    return int(done) / float(seconds)


def io_entry(cgroup: str, wbps: int | str) -> Callable[[AuditEntry], bool]:
    def match(e: AuditEntry) -> bool:
        return (
            e.file == "io.max" and e.cgroup == cgroup and e.outcome is Outcome.APPLIED
            and f"wbps={wbps}" in e.new
        )  # fmt: skip

    return match


def test_io_pressure_caps_the_noisy_cgroup_and_lifts_the_cap(
    fs: CgroupFS,
    cgroup: str,
    spawn: Spawn,
    tmp_path: Path,
    scratch_disk: tuple[str, Device],
    figures: Figures,
) -> None:
    disk, device = scratch_disk
    fs.enable_controllers(cgroup, ["io"])
    protected, noisy = f"{cgroup}/protected", f"{cgroup}/noisy"
    writers = {}
    for c in (protected, noisy):
        fs.create(c)
        writers[c] = spawn(python_argv(DIRECT_WRITER, disk, str(CHUNK)), where=c)
        writers[c].expect("ready", 90)
    free = rate(writers[noisy], 16 * MiB)
    policy = POLICY.format(root=cgroup, noisy=noisy, protected=protected, device=device)
    with enforcing(fs, cgroup, tmp_path, policy) as loop:
        time.sleep(1.0)  # a quiet start: no cap while the protected cgroup does no io
        assert io_max_of(fs, noisy, device) == IoMax()
        writers[protected].send(f"write {160 * MiB}")
        cap = wait_for_entry(loop, io_entry(noisy, CAP), 20, "the cap on the noisy cgroup")
        assert io_max_of(fs, noisy, device) == IoMax(wbps=CAP)
        held = rate(writers[noisy], 4 * MiB)
        writers[protected].expect("wrote", 120)
        lift = wait_for_entry(loop, io_entry(noisy, "max"), 20, "the cap to be lifted")
        lifted = io_max_of(fs, noisy, device)
    entries = [e for e in audit_of(loop) if e.file == "io.max"]
    figures.note(
        f"io_pressure: {cap.reason} (inputs {dict(cap.inputs)}); noisy O_DIRECT writes "
        f"{free / MiB:.1f} MiB/s free, {held / MiB:.1f} MiB/s capped at 2 MiB/s; lifted after "
        f"{lift.time - cap.time:.1f} s: {lift.reason}"
    )
    assert lifted == IoMax()
    assert [e.cgroup for e in entries] == [noisy, noisy], "the protected cgroup was capped"
    assert held < free / 2 and held < 1.3 * CAP, (held, free)
