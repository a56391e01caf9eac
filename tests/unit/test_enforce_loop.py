"""The enforcement loop and `corral enforce`: a round on a captured tree (live, dry-run),
on_exit restore, a vanished cgroup, stop() within a second, and a PSI trigger on the host's
real cgroup2 waking a round before the tick. A regular file is not truncated by the writer's
open(O_WRONLY), so every value written into the captured tree is at least as long as the
text it replaces."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_psi_trigger import has_cap_sys_resource

from corral.cli.enforce import enforce_cmd
from enforce.actions import Action, Mode, Outcome
from enforce.audit import AuditLog, read_audit
from enforce.engine import Engine
from enforce.loop import EnforcementLoop, own_cgroup
from enforce.policy import Policy, load_policy
from monitor.collector import Collector, CollectorConfig
from monitor.snapshot import Snapshot
from runtime.cgroupfs import CgroupFS

WEB = "capture/web"

POLICY = """
[enforcer]
managed_root = "capture"
tick_seconds = "{tick}"
on_exit = "{on_exit}"

[[rule]]
name = "static"
select = {{ cgroup = "capture/web" }}

[rule.limits]
pids_max = 1000
cpu_weight = 250
"""


def policy(tmp_path: Path, tick: str = "1s", on_exit: str = "leave") -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY.format(tick=tick, on_exit=on_exit))
    return load_policy(path)


_COLLECTORS: list[Collector] = []


@pytest.fixture(autouse=True)
def _close_collectors() -> Iterator[None]:
    """A loop given a collector does not own it: close those make_loop made (each holds
    ~200 fds of the captured tree)."""
    yield
    while _COLLECTORS:
        _COLLECTORS.pop().close()


def make_loop(fs: CgroupFS, tmp_path: Path, pol: Policy, dry_run: bool = False) -> EnforcementLoop:
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    collector = Collector(fs, CollectorConfig(watch=False))
    _COLLECTORS.append(collector)
    return EnforcementLoop(
        pol, fs, audit=audit, collector=collector, own="elsewhere", dry_run=dry_run
    )


def text(fs: CgroupFS, name: str) -> str:
    return (fs.root / WEB / name).read_text().strip()


def test_a_round_applies_audits_and_counts(captured_fs: CgroupFS, tmp_path: Path) -> None:
    loop = make_loop(captured_fs, tmp_path, policy(tmp_path))
    entries = loop.run_once()
    got = {(e.file, e.old, e.new, e.outcome) for e in entries}
    assert got == {
        ("pids.max", "max", "1000", Outcome.APPLIED),
        ("cpu.weight", "200", "250", Outcome.APPLIED),
    }
    assert (text(captured_fs, "pids.max"), text(captured_fs, "cpu.weight")) == ("1000", "250")
    assert read_audit(str(tmp_path / "audit.jsonl")) == entries
    body = loop.metrics.render().decode()
    assert (
        'corral_enforcer_actions_total{action="applied",controller="limits",rule="static"} 2.0'
        in body
    )
    assert 'corral_enforcer_target_pids_limit{cgroup="capture/web"} 1000.0' in body
    # The next round re-reads the files it wrote and finds nothing left to do.
    assert loop.run_once() == []
    loop.close()


def test_dry_run_loop_writes_nothing(captured_fs: CgroupFS, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in captured_fs.root.rglob("*") if p.is_file()}
    loop = make_loop(captured_fs, tmp_path, policy(tmp_path), dry_run=True)
    entries = loop.run_once() + loop.run_once()
    loop.close()
    assert entries
    assert {(e.mode, e.outcome) for e in entries} == {(Mode.DRY_RUN, Outcome.DRY_RUN)}
    assert {p: p.read_bytes() for p in captured_fs.root.rglob("*") if p.is_file()} == before


def test_on_exit_restore_puts_the_originals_back(captured_fs: CgroupFS, tmp_path: Path) -> None:
    loop = make_loop(captured_fs, tmp_path, policy(tmp_path, on_exit="restore"))
    loop.run_once()
    (captured_fs.root / WEB / "cpu.weight").write_text("250\n")  # as the kernel shows it
    (captured_fs.root / WEB / "pids.max").write_text("1000\n")
    restored = loop.close()
    assert {(e.file, e.old, e.new) for e in restored} == {
        ("cpu.weight", "250", "200"),
        ("pids.max", "1000", "max"),
    }
    assert text(captured_fs, "cpu.weight") == "200"
    assert text(captured_fs, "pids.max").startswith("max")  # "max" over "1000", untruncated
    assert loop.close() == []


def test_a_vanished_cgroup_does_not_stop_the_loop(captured_fs: CgroupFS, tmp_path: Path) -> None:
    loop = make_loop(captured_fs, tmp_path, policy(tmp_path))
    loop.run_once()
    shutil.rmtree(captured_fs.root / WEB)
    assert loop.run_once() == []
    assert "capture/web" not in loop.metrics.render().decode().split("target")[-1]
    loop.close()


def test_stop_ends_a_long_tick_within_a_second(captured_fs: CgroupFS, tmp_path: Path) -> None:
    loop = make_loop(captured_fs, tmp_path, policy(tmp_path, tick="30s"))
    loop.start()
    deadline = time.monotonic() + 10
    while loop.rounds < 1:
        assert time.monotonic() < deadline, "no first round"
        time.sleep(0.01)
    began = time.monotonic()
    loop.stop()
    assert time.monotonic() - began < 1.0
    assert not loop.running and loop.rounds == 1


class CpuTriggerEngine(Engine):
    """The policy's engine, arming a cpu trigger on one cgroup (the host's cgroup2 has no
    memory controller, so memory stalls cannot be made on demand here; cpu ones can)."""

    def __init__(self, pol: Policy, cgroup: str) -> None:
        super().__init__(pol)
        self.cgroup = cgroup

    def triggers(self, snapshot: Snapshot) -> list[tuple[str, str, str]]:
        return [(self.cgroup, "cpu", "some 100000 2000000")]


def test_a_firing_trigger_starts_a_round_before_the_tick(
    host: tuple[CgroupFS, str], tmp_path: Path
) -> None:
    fs, cgroup = host
    # The tick (60 s) is past every wait below: only the trigger can start the second round.
    # The waits are generous bounds for a loaded host, not timings.
    pol = Policy.model_validate({"enforcer": {"managed_root": cgroup, "tick_seconds": 60}})
    collector = Collector(fs, CollectorConfig(subtree=cgroup))
    loop = EnforcementLoop(
        pol, fs, audit=AuditLog(None), collector=collector, engine=CpuTriggerEngine(pol, cgroup)
    )
    loop.start()
    spinners = []
    try:
        _until(lambda: loop.rounds >= 1 and len(loop.triggers) == 1, "the trigger armed", 25)
        spinners = [_spin(fs, cgroup) for _ in range(3 * (os.cpu_count() or 1))]
        # early_rounds counts when the trigger wakes the loop, rounds when that round is done.
        _until(
            lambda: loop.early_rounds >= 1 and loop.rounds >= 2,
            "a round woken by the cpu trigger, done",
            30,
        )
    finally:
        loop.stop()
        for p in spinners:
            p.kill()
            p.wait()
        collector.close()


class FailingOnceEngine(Engine):
    """The policy's engine, raising in its first decide() (a controller bug)."""

    def decide(self, history: Sequence[Snapshot]) -> list[Action]:
        if not getattr(self, "failed", False):
            self.failed = True
            raise ZeroDivisionError("a controller bug")
        return super().decide(history)


def test_a_failing_round_is_logged_and_the_loop_goes_on(
    captured_fs: CgroupFS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pol = policy(tmp_path, tick="100ms")
    collector = Collector(captured_fs, CollectorConfig(watch=False))
    loop = EnforcementLoop(
        pol, captured_fs, audit=AuditLog(None), collector=collector, engine=FailingOnceEngine(pol)
    )
    with caplog.at_level(logging.ERROR, "corral.enforce"):
        loop.start()
        _until(lambda: len(loop.audit.recent()) == 2, "the second round's writes")
        loop.stop()
    assert "enforcement round failed: ZeroDivisionError: a controller bug" in caplog.text
    assert text(captured_fs, "pids.max") == "1000"


class ShortWindowEngine(CpuTriggerEngine):
    def triggers(self, snapshot: Snapshot) -> list[tuple[str, str, str]]:
        return [(self.cgroup, "cpu", "some 150000 1000000")]


def test_a_trigger_the_kernel_refuses_is_reported_once_and_not_retried(
    host: tuple[CgroupFS, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without CAP_SYS_RESOURCE a 1 s window is refused (multiples of 2 s only): the loop
    says so once and reacts at the tick. With the capability the trigger is armed."""
    fs, cgroup = host
    pol = Policy.model_validate({"enforcer": {"managed_root": cgroup}})
    collector = Collector(fs, CollectorConfig(subtree=cgroup))
    engine = ShortWindowEngine(pol, cgroup)
    loop = EnforcementLoop(pol, fs, audit=AuditLog(None), collector=collector, engine=engine)
    with caplog.at_level(logging.WARNING, "corral.enforce"):
        loop.run_once()
        loop.run_once()
    loop.close()
    collector.close()
    if has_cap_sys_resource():
        assert loop.rounds == 2 and "reacts at the tick" not in caplog.text
    else:
        assert caplog.text.count("CAP_SYS_RESOURCE") == 1
        assert f"{cgroup} reacts at the tick only" in caplog.text


def test_sigterm_stops_the_command_cleanly(host: tuple[CgroupFS, str], tmp_path: Path) -> None:
    fs, _ = host
    path = tmp_path / "p.toml"
    path.write_text(POLICY.format(tick="30s", on_exit="leave"))
    code = "from corral.cli.enforce import enforce_cmd; enforce_cmd()"
    args = ["--policy", str(path), "--cgroup-root", str(fs.root)]
    args += ["--audit-log", str(tmp_path / "a.jsonl")]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert "corral enforce: enforcing 1 rule(s)" in proc.stderr.readline()
    time.sleep(0.5)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(10) == 0, rest
    assert time.monotonic() - began < 2.0
    assert "SIGTERM: stopping" in rest
    assert re.search(r"stopped after \d+ rounds \(0 woken by PSI triggers\)", rest), rest


def test_own_cgroup_is_read_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("12:pids:/x\n0::/system.slice/corral.service\n")
    assert own_cgroup(str(proc)) == "system.slice/corral.service"
    assert own_cgroup(str(tmp_path / "none")) is None


def test_cli_policy_error_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[enforcer]\ntick_seconds = "soon"\n')
    result = CliRunner().invoke(enforce_cmd, ["--policy", str(bad), "--once"])
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "tick_seconds" in result.output


def test_cli_refuses_a_root_that_is_not_cgroup2(tmp_path: Path) -> None:
    good = tmp_path / "p.toml"
    good.write_text(POLICY.format(tick="1s", on_exit="leave"))
    args = ["--policy", str(good), "--once", "--cgroup-root", str(tmp_path)]
    result = CliRunner().invoke(enforce_cmd, args)
    assert result.exit_code == 1
    assert "is not a cgroup2 mount" in result.output


def test_cli_once_on_the_host_reports_no_action(
    host: tuple[CgroupFS, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs, _ = host
    path = tmp_path / "p.toml"
    path.write_text(POLICY.format(tick="1s", on_exit="leave"))  # manages "capture": absent
    log = tmp_path / "logs" / "audit.jsonl"
    args = ["--policy", str(path), "--once", "--cgroup-root", str(fs.root), "--audit-log", str(log)]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(enforce_cmd, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "no action" in result.output
    assert read_audit(str(log)) == []


def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _spin(fs: CgroupFS, cgroup: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "while True: pass"],
        preexec_fn=lambda: fs.move(os.getpid(), cgroup),
    )
