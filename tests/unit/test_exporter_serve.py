"""`corral serve`: refusals with their exit status and words, and the real command against
the host's cgroup2, stopped by SIGINT, logging one line per event (sd-daemon priorities
when stderr is the journal)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.cli.serve import JournalFormatter

CORRAL = str(Path(sys.executable).with_name("corral"))


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["serve", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--no-enforce", "--policy", "p.toml"], "--no-enforce runs no enforcer"),
        (["--dry-run"], "--dry-run and --audit-log need --policy FILE|DIR"),
        (["--audit-log", "a.jsonl"], "--dry-run and --audit-log need --policy FILE|DIR"),
    ],
)
def test_enforcer_options_that_do_not_go_together_exit_2(args: list[str], words: str) -> None:
    status, output = invoke(*args)
    assert status == 2
    assert words in output, output


def test_a_policy_that_does_not_validate_exits_2_naming_file_line_and_field(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text('[enforcer]\ntick_seconds = "soon"\n')
    status, output = invoke("--policy", str(policy))
    assert status == 2
    assert f"{policy}:2: enforcer.tick_seconds: bad value 'soon'" in output, output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--listen", "localhost"], "--listen 'localhost': expected HOST:PORT like 127.0.0.1:9847"),
        (["--interval", "0s"], "'0s': expected a duration from 0.1 s to 3600 s, like 1s"),
        (["--interval", "fast"], "'fast': expected a duration from 0.1 s to 3600 s, like 1s"),
        (["--subtree", "../etc"], "'..' is not allowed"),
        (["--max-depth", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args: list[str], words: str) -> None:
    status, output = invoke("--no-enforce", *args)
    assert status == 2
    assert words in " ".join(output.split()), output


def test_a_bad_web_config_exits_2_with_its_message(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text("basic_auth_users: {prom: hunter2}\n")
    status, output = invoke("--no-enforce", "--web-config", str(config))
    assert status == 2
    assert f"{config}: basic_auth_users.prom: not a bcrypt hash" in " ".join(output.split())


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (tmp_path / "serve.log").open("wb")
    enforce = [] if "--policy" in args else ["--no-enforce", "--interval", "200ms"]
    argv = [CORRAL, "serve", *enforce, *args]
    return subprocess.Popen(argv, stdout=log, stderr=log, env={**os.environ, **(env or {})})


def wait_log(tmp_path: Path, proc: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = re.search(pattern, (tmp_path / "serve.log").read_text())
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError((tmp_path / "serve.log").read_text())


def test_serve_runs_on_the_host_and_stops_on_sigint(tmp_path: Path) -> None:
    proc = start(tmp_path, "--listen", "127.0.0.1:0", "--max-depth", "0")
    url = wait_log(tmp_path, proc, r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert 'corral_cgroup_info{cgroup="/",id="",kind="cgroup",name="/"} 1.0' in body
    assert "corral_cgroups 1.0" in body  # --max-depth 0: the root alone
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - began < 3
    lines = (tmp_path / "serve.log").read_text().splitlines()
    assert lines[0].startswith(
        f"info: corral.serve: listening on {url} (/metrics, /healthz, /api/v1); polling 1 "
    )
    assert lines[0].endswith("every 0.2s; enforcement off")
    assert lines[1:] == ["info: corral.serve: stopping on SIGINT", "info: corral.serve: stopped"]


def test_log_lines_carry_sd_daemon_priorities_when_stderr_is_the_journal(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "serve.log"
    log_file.touch()
    st = log_file.stat()
    proc = start(
        tmp_path, "--listen", "127.0.0.1:0", env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    )
    wait_log(tmp_path, proc, r"<6>corral\.serve: listening on http://")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert log_file.read_text().splitlines()[-1] == "<6>corral.serve: stopped"


def test_a_busy_port_and_a_root_that_is_not_cgroup2_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(tmp_path, "--listen", f"127.0.0.1:{port}")
        assert proc.wait(timeout=20) == 1
    message = f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert (tmp_path / "serve.log").read_text().strip() == message
    proc = start(tmp_path, "--cgroup-root", str(tmp_path))
    assert proc.wait(timeout=20) == 1
    assert f"Error: {tmp_path} is not a cgroup2 mount" in (tmp_path / "serve.log").read_text()


def test_journal_formatter_writes_one_line_per_event() -> None:
    record = logging.LogRecord("corral.agent", logging.ERROR, __file__, 1, "a\nb", None, None)
    assert JournalFormatter(journal=True).format(record) == "<3>corral.agent: a | b"
    assert JournalFormatter(journal=False).format(record) == "error: corral.agent: a | b"


def test_serve_with_a_policy_enforces_from_the_same_polls_and_serves_its_metrics_and_audit(
    tmp_path: Path,
) -> None:
    """On this host (cgroup2 without controllers) the loop polls, decides and audits nothing
    it cannot write; what is checked is the wiring: one collector feeding the exporter, the
    enforcer's families in /metrics, its history and audit behind /api/v1."""
    policy = tmp_path / "policy.toml"
    audit = tmp_path / "audit.jsonl"
    policy.write_text(
        '[enforcer]\nmanaged_root = "corral-test-none"\ntick_seconds = "200ms"\n'
        f'audit_log = "{audit}"\n[[rule]]\nname = "all"\n[rule.pids_guard]\n'
    )
    proc = start(tmp_path, "--policy", str(policy), "--listen", "127.0.0.1:0", "--max-depth", "0")
    found = wait_log(tmp_path, proc, r"listening on (http://127\.0\.0\.1:\d+) .*; polling")
    url = found.group(1)
    line = (tmp_path / "serve.log").read_text().splitlines()[0]
    assert f"every 0.2s (the policy's tick) and on PSI triggers; enforcing {policy}" in line
    assert f"audit to {audit}" in line
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
            body = resp.read().decode()
        with urllib.request.urlopen(url + "/api/v1/history?after=0", timeout=5) as resp:
            history = json.loads(resp.read())
        if (
            "corral_enforcer_last_decision_timestamp_seconds" in body
            and len(history["snapshots"]) >= 2
        ):
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert "corral_cgroups 1.0" in body
    with urllib.request.urlopen(url + "/api/v1/audit?after=0", timeout=5) as resp:
        assert json.loads(resp.read())["entries"] == []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert (tmp_path / "serve.log").read_text().splitlines()[-1] == "info: corral.serve: stopped"
