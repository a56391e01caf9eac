"""The actuator: each outcome (recommended, refused, skipped on drift, rate-limited, dry-run,
applied, failed on a vanished cgroup or a rejected value), each one audited; on_exit restore.

Limit files live in the ``seeded`` fake root (cgroup ``g`` holds a captured cgroup's files;
the host's cgroup2 has no memory or pids controller). A regular file is not truncated by the
writer's open(O_WRONLY), so every value written here is at least as long as the text it
replaces, as the kernel's own files would not care. cgroup.freeze and cgroup.kill run on the
host's real cgroup2.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from enforce.actions import Action, IoLimit, Mode, Outcome, Value
from enforce.actuator import Actuator
from enforce.audit import AuditLog, read_audit
from enforce.policy.schema import EnforcerSettings
from monitor.sample import CgroupSample, HostSample
from monitor.snapshot import Snapshot
from runtime.cgroupfs import MAX, CgroupFS
from runtime.cgroupfs.core import read_cgroup_events
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.io import Device, IoMax

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snap(*cgroups: str, current: int = 100 * MiB) -> Snapshot:
    samples = {c: CgroupSample(c, memory_current=current) for c in cgroups}
    return Snapshot(1, HostSample(1.7e9, 50.0, samples), {}, {}, 0.0)


def act(
    file: str = "memory.high",
    old: Value | None = MAX,
    new: Value = 400 * MiB,
    cgroup: str = "g",
    mode: Mode = Mode.ENFORCE,
) -> Action:
    return Action("r1", "memory_pressure", cgroup, file, old, new, mode, "because")


def actuator(
    fs: CgroupFS, tmp_path: Path, clock: Clock | None = None, **settings: object
) -> Actuator:
    values: dict[str, object] = {"managed_root": "", **settings}
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    tick = clock or Clock()
    config = EnforcerSettings.model_validate(values)
    return Actuator(fs, config, audit, "agent", clock=tick, monotonic=tick)


def text(fs: CgroupFS, name: str, cgroup: str = "g") -> str:
    return (fs.root / cgroup / name).read_text().strip()


def test_applied_write_reads_back_and_is_audited(seeded: CgroupFS, tmp_path: Path) -> None:
    a = actuator(seeded, tmp_path)
    [entry] = a.apply([act()], snap("g"))
    assert entry.outcome is Outcome.APPLIED
    assert text(seeded, "memory.high") == str(400 * MiB)
    assert read_audit(str(tmp_path / "audit.jsonl")) == [entry] == a.audit.recent()
    assert (entry.old, entry.new, entry.reason) == ("max", str(400 * MiB), "because")
    assert a.written == {("g", "memory.high")}


@pytest.mark.parametrize(
    ("file", "old", "new", "shown"),
    [
        ("pids.max", MAX, 1234, "1234"),
        ("cpu.max", CpuMax(20_000), CpuMax(150_000), "150000 100000"),
        ("cpu.weight", None, 250, "250"),
        ("memory.max", MAX, 512 * MiB, str(512 * MiB)),
    ],
)
def test_each_limit_file_is_written_by_its_writer(
    seeded: CgroupFS, tmp_path: Path, file: str, old: Value | None, new: Value, shown: str
) -> None:
    [entry] = actuator(seeded, tmp_path).apply([act(file, old, new)], snap("g"))
    assert entry.outcome is Outcome.APPLIED, entry.reason
    assert text(seeded, file) == shown


def test_recommend_and_dry_run_write_nothing(seeded: CgroupFS, tmp_path: Path) -> None:
    before = _files(seeded)
    entries = actuator(seeded, tmp_path).apply(
        [act(mode=Mode.RECOMMEND), act(mode=Mode.DRY_RUN)], snap("g")
    )
    assert [e.outcome for e in entries] == [Outcome.RECOMMENDED, Outcome.DRY_RUN]
    assert _files(seeded) == before
    assert len(read_audit(str(tmp_path / "audit.jsonl"))) == 2


@pytest.mark.parametrize(
    ("action", "settings", "reason"),
    [
        (act(cgroup="g"), {"managed_root": "corral"}, "outside the managed root"),
        (act(cgroup="agent"), {}, "holds the enforcer itself"),
        (act(cgroup="init.scope"), {}, "init.scope"),
        (act(cgroup=""), {}, "root cgroup"),
        (act(cgroup="gone"), {}, "not in the snapshot"),
        (act("memory.max", MAX, 120 * MiB), {}, "below memory.current"),
    ],
)
def test_safeguard_refusal_writes_nothing(
    seeded: CgroupFS, tmp_path: Path, action: Action, settings: dict[str, object], reason: str
) -> None:
    before = _files(seeded)
    a = actuator(seeded, tmp_path, None, **settings)
    [entry] = a.apply([action], snap("g", "agent", "init.scope", ""))
    assert entry.outcome is Outcome.REFUSED
    assert reason in entry.reason
    assert _files(seeded) == before
    assert a.audit.recent() == [entry]


def test_external_change_is_skipped_and_logged(
    seeded: CgroupFS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (seeded.root / "g" / "memory.high").write_text(f"{300 * MiB}\n")  # someone else's write
    before = _files(seeded)
    with caplog.at_level(logging.WARNING, "corral.enforce"):
        [entry] = actuator(seeded, tmp_path).apply([act(old=MAX)], snap("g"))
    assert entry.outcome is Outcome.SKIPPED
    assert f"memory.high is {300 * MiB}, not max" in entry.reason
    assert "changed outside the enforcer" in caplog.text
    assert _files(seeded) == before


def test_page_rounding_by_the_kernel_is_not_drift(seeded: CgroupFS, tmp_path: Path) -> None:
    # The kernel keeps memory.high in pages: 1000000 written reads back as 999424.
    (seeded.root / "g" / "memory.high").write_text("999424\n")
    [entry] = actuator(seeded, tmp_path).apply([act(old=1_000_000, new=2_000_000)], snap("g"))
    assert entry.outcome is Outcome.APPLIED


def test_rate_limit_refuses_beyond_the_budget_and_refills(seeded: CgroupFS, tmp_path: Path) -> None:
    clock = Clock()
    a = actuator(seeded, tmp_path, clock, max_writes_per_second=2)
    actions = [act(mode=Mode.DRY_RUN) for _ in range(3)]
    first = a.apply(actions, snap("g"))
    assert [e.outcome for e in first] == [Outcome.DRY_RUN, Outcome.DRY_RUN, Outcome.REFUSED]
    assert "rate limit" in first[2].reason and "max_writes_per_second" in first[2].reason
    clock.now += 0.5  # one write's worth at 2 per second
    again = a.apply(actions[:2], snap("g"))
    assert [e.outcome for e in again] == [Outcome.DRY_RUN, Outcome.REFUSED]
    # Refusals by a safeguard and recommendations spend no budget.
    clock.now += 10
    free = [act(mode=Mode.RECOMMEND)] * 5 + [act(cgroup="init.scope")] * 5
    a.apply(free, snap("g", "init.scope"))
    assert [e.outcome for e in a.apply(actions[:2], snap("g"))] == [Outcome.DRY_RUN] * 2


def test_vanished_cgroup_fails_without_a_traceback(seeded: CgroupFS, tmp_path: Path) -> None:
    (seeded.root / "v").mkdir()
    (seeded.root / "v" / "memory.high").write_text("max\n")
    a = actuator(seeded, tmp_path)
    snapshot = snap("g", "v")
    for name in os.listdir(seeded.root / "v"):
        os.unlink(seeded.root / "v" / name)
    os.rmdir(seeded.root / "v")
    [entry] = a.apply([act(cgroup="v")], snapshot)
    assert entry.outcome is Outcome.FAILED
    assert entry.reason == "cgroup v is gone: nothing written"


def test_rejected_value_fails_and_names_it(seeded: CgroupFS, tmp_path: Path) -> None:
    nowhere = IoLimit(Device(4095, 1048575), IoMax(wbps=MiB))
    [entry] = actuator(seeded, tmp_path).apply([act("io.max", None, nowhere)], snap("g"))
    assert entry.outcome is Outcome.FAILED
    assert entry.reason.startswith("write failed: ") and "4095:1048575" in entry.reason


def test_restore_puts_back_only_what_it_changed(seeded: CgroupFS, tmp_path: Path) -> None:
    (seeded.root / "g" / "pids.max").write_text("max\n")
    a = actuator(seeded, tmp_path)
    a.apply([act("pids.max", MAX, 1234)], snap("g"))
    (seeded.root / "g" / "pids.max").write_text("1234\n")  # as the kernel would show it
    originals: dict[tuple[str, str], Value | None] = {
        ("g", "pids.max"): MAX,
        ("g", "memory.max"): MAX,  # decided about, never written: left alone
        ("g", "cpu.weight"): None,
    }
    before = text(seeded, "memory.max")
    [entry] = a.restore(originals)
    assert (entry.rule, entry.controller, entry.outcome) == ("on_exit", "restore", Outcome.APPLIED)
    assert (entry.old, entry.new) == ("1234", "max")
    assert text(seeded, "pids.max").startswith("max")
    assert text(seeded, "memory.max") == before
    assert a.restore(originals) == []  # nothing of ours is left to restore


def test_restore_passes_the_safeguards(seeded: CgroupFS, tmp_path: Path) -> None:
    (seeded.root / "g" / "memory.max").write_text("max\n")
    a = actuator(seeded, tmp_path)
    a.apply([act("memory.max", MAX, 900 * MiB)], snap("g"))
    # The original memory.max is now below the usage plus margin: restoring it would OOM.
    [entry] = a.restore({("g", "memory.max"): 200 * MiB}, snap("g", current=190 * MiB))
    assert entry.outcome is Outcome.REFUSED and "below memory.current" in entry.reason
    assert text(seeded, "memory.max") == str(900 * MiB)


def test_freeze_and_kill_on_the_real_cgroup2(host: tuple[CgroupFS, str], tmp_path: Path) -> None:
    fs, cgroup = host
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import time; time.sleep(60)"],
        preexec_fn=lambda: fs.move(os.getpid(), cgroup),
    )
    try:
        a = actuator(fs, tmp_path)
        [frozen] = a.apply([act("cgroup.freeze", False, True, cgroup=cgroup)], snap(cgroup))
        assert frozen.outcome is Outcome.APPLIED, frozen.reason
        assert _until(lambda: _frozen(fs, cgroup))
        [killed] = a.apply([act("cgroup.kill", None, True, cgroup=cgroup)], snap(cgroup))
        assert killed.outcome is Outcome.APPLIED, killed.reason
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def _frozen(fs: CgroupFS, cgroup: str) -> bool:
    events = read_cgroup_events(fs, cgroup)
    return events is not None and events.frozen


def _until(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def _files(fs: CgroupFS) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(fs.root.rglob("*")) if p.is_file()}
