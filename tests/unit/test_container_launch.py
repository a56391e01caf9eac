"""The shim launched before its container exists (runtime.container.launch), the exit
recorded without a helper interpreter, and a shim that dies mid-run, through the real CLI
on this host."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from test_container_run import (  # noqa: F401 - fixtures
    Host,
    host_fixture,
    nothing_left,
    rootfs_fixture,
    wait_for,
)

from runtime.container.launch import launch
from runtime.container.logs import parse_time
from runtime.container.state import SHIM_DIED, StateStore


def shims(state_dir: Path) -> list[int]:
    """Processes whose command line names the state directory (the shims)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if entry.isdigit() and str(state_dir).encode() in cmdline:
            found.append(int(entry))
    return found


def test_a_cancelled_launch_leaves_no_process(tmp_path: Path) -> None:
    shim = launch(str(tmp_path), attach=False, rm=True)
    assert shim.flags == "rm" and shim.state_dir == str(tmp_path)
    shim.cancel()  # returns once the shim and its starter have exited
    assert shims(tmp_path) == []
    shim.cancel()  # idempotent
    assert shim.stdin == shim.sync == -1


def test_a_shim_whose_cli_dies_before_sending_exits(tmp_path: Path) -> None:
    shim = launch(str(tmp_path), attach=False, rm=False)
    os.close(shim.stdin)  # what the CLI's death does to the pipe
    shim.stdin = -1
    assert os.read(shim.sync, 64) == b""  # EOF: the shim exited without a word
    shim.cancel()
    assert shims(tmp_path) == []


def test_a_failed_run_leaves_no_shim_behind(host: Host, rootfs: Path, tmp_path: Path) -> None:
    with nothing_left(host):
        out = host.corral("run", "--rm", "--bundle", str(tmp_path / "missing"))
        assert out.returncode == 125 and "config.json" in out.stderr
        assert shims(host.state_dir) == []  # gone when the CLI returns, not later
        out = host.corral("run", "--memory", "12q", str(rootfs), "--", "true")
        assert out.returncode == 125 and "--memory" in out.stderr
        assert shims(host.state_dir) == []


def test_the_exit_is_recorded_by_the_shim_alone(host: Host, rootfs: Path) -> None:
    """No helper interpreter after the container's exit: the shim's child writes state.json
    with the status, the code and the times, and --rm removes everything."""
    out = host.corral("run", "--name", "kept", str(rootfs), "--", "sh", "-c", "exit 9")
    assert out.returncode == 9, out.stderr
    c = StateStore(host.state_dir).get("kept")
    assert (c.status, c.exit_code, c.oom_killed, c.error) == ("stopped", 9, False, None)
    assert c.started is not None and c.finished is not None
    assert parse_time(c.finished) >= parse_time(c.started) >= parse_time(c.created)
    with nothing_left(host):
        out = host.corral("run", "--rm", str(rootfs), "--", "sh", "-c", "echo gone")
        assert (out.returncode, out.stdout) == (0, "gone\n")


def test_a_shim_killed_mid_run_is_reconciled(host: Host, rootfs: Path) -> None:
    """SIGKILL to the shim while the container runs: state.json still says running (every
    record is whole), `corral ps` reconciles it to stopped with "shim died", and `corral rm
    -f` removes the container, its processes and its cgroup."""
    with nothing_left(host):
        out = host.corral("run", "-d", "--name", "crash", str(rootfs), "--", "sleep", host.marker)
        assert out.returncode == 0, out.stderr
        state = host.inspect("crash")
        assert state["status"] == "running"
        os.kill(state["shim_pid"], signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{state['shim_pid']}").exists(), "the shim to go")
        cid = StateStore(host.state_dir).get("crash").id
        raw = json.loads((host.state_dir / "containers" / cid / "state.json").read_text())
        assert raw["status"] == "running"
        out = host.corral("ps", "-a", "--json")
        [row] = [c for c in json.loads(out.stdout) if c["name"] == "crash"]
        assert (row["status"], row["exit_code"]) == ("stopped", None)
        assert StateStore(host.state_dir).get("crash").error == SHIM_DIED
        assert host.corral("rm", "-f", "crash").returncode == 0
