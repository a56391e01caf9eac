"""`corral oci create|start|state|kill|delete` and `corral run --bundle` on this host, through
the CLI in a subprocess, over bundles made by `runc spec` on a busybox rootfs.

The state machine (creating -> created -> running -> stopped), PID 1 blocked before execve
after create (nothing of the command has run), wrong-state verbs refused with the state
named and nothing changed, delete undoing everything, and a limit this host cannot enforce
refused before anything exists. Shared helpers for test_oci_lifecycle_config.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_container_run import (  # noqa: F401 - fixtures
    TIMEOUT,
    Host,
    host_fixture,
    nothing_left,
    rootfs_fixture,
    wait_for,
)

OCI_CLI = """
from corral.cli.oci import oci
oci(prog_name="corral oci")
"""
Config = dict[str, Any]


@pytest.fixture(name="bundles")
def bundles_fixture() -> Iterator[Path]:
    """A directory for bundles every uid can traverse (a user namespace's root is an
    unprivileged host uid)."""
    base = Path(tempfile.mkdtemp(prefix="corral-oci-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def oci(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OCI_CLI, *args], env=host.env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip


def make_bundle(
    bundles: Path, rootfs: Path, host: Host, cid: str, args: list[str],
    change: Callable[[Config], None] | None = None,
) -> Path:  # fmt: skip
    """`runc spec` over a copy-free busybox root (root.path absolute, read-only), terminal
    off, the command, and the cgroup under the test's parent."""
    bundle = bundles / cid
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = str(rootfs)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["linux"]["cgroupsPath"] = f"{host.parent}/{cid}"
    if change is not None:
        change(config)
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def state(host: Host, cid: str) -> dict[str, Any]:
    out = oci(host, "state", cid)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def created(host: Host, bundle: Path, cid: str, *extra: str) -> dict[str, Any]:
    out = oci(host, "create", cid, str(bundle), *extra)
    assert out.returncode == 0, out.stderr
    current = state(host, cid)
    assert current["status"] == "created" and current["pid"] > 0
    return current


def sync_dir(bundles: Path) -> Path:
    path = bundles / "sync"
    path.mkdir(exist_ok=True)
    return path


def bind(source: Path, destination: str) -> Config:
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", "rw"]}  # fmt: skip


def with_mounts(*mounts: Config) -> Callable[[Config], None]:
    def change(config: Config) -> None:
        config["mounts"] += list(mounts)

    return change


def log_lines(host: Host, cid: str) -> list[str]:
    (directory,) = [
        p for p in (host.state_dir / "containers").iterdir()
        if json.loads((p / "state.json").read_text())["name"] == cid
    ]  # fmt: skip
    return [json.loads(line)["log"] for line in (directory / "log.jsonl").read_text().splitlines()]


def store_state(host: Host, cid: str) -> dict[str, Any]:
    for p in (host.state_dir / "containers").iterdir():
        data: dict[str, Any] = json.loads((p / "state.json").read_text())
        if data["name"] == cid:
            return data
    raise AssertionError(f"no container {cid}")


# -- the state machine --------------------------------------------------------------------------


def test_create_blocks_pid1_before_execve_then_start_runs_it(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    out_dir = sync_dir(bundles)
    script = f"echo ran > /sync/ran; echo hello; exit 7 # {host.marker}"
    bundle = make_bundle(
        bundles, rootfs, host, "sm", ["sh", "-c", script], with_mounts(bind(out_dir, "/sync"))
    )
    with nothing_left(host):
        pid_file = bundles / "pid"
        current = created(host, bundle, "sm", "--pid-file", str(pid_file))
        pid = current["pid"]
        assert current == {
            "ociVersion": "1.0.2", "id": "sm", "status": "created", "pid": pid,
            "bundle": str(bundle), "annotations": {},
        }  # fmt: skip
        assert pid_file.read_text() == str(pid)
        # PID 1 is set up (its own pid namespace, the config's capabilities) but still
        # corral's process: the command has not run.
        assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] != [b"sh", b"-c"]
        assert not (out_dir / "ran").exists()
        assert os.path.basename(os.readlink(f"/proc/{pid}/fd/3")) == "exec.fifo"
        assert oci(host, "start", "sm").returncode == 0
        wait_for(lambda: state(host, "sm")["status"] == "stopped", "sm to stop")
        assert (out_dir / "ran").read_text() == "ran\n"
        assert store_state(host, "sm")["exit_code"] == 7
        assert "hello\n" in log_lines(host, "sm")
        assert state(host, "sm")["pid"] == 0
        cgroup = f"{host.parent}/sm"
        assert host.fs.exists(cgroup) and store_state(host, "sm")["kind"] == "oci"
        assert oci(host, "delete", "sm").returncode == 0
        assert not host.fs.exists(cgroup)
        out = oci(host, "state", "sm")
        assert out.returncode == 1 and "no such container: sm" in out.stderr


def test_wrong_state_verbs_are_refused_and_change_nothing(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    bundle = make_bundle(bundles, rootfs, host, "ws", ["sleep", host.marker])
    with nothing_left(host):
        created(host, bundle, "ws")
        assert oci(host, "start", "ws").returncode == 0
        assert state(host, "ws")["status"] == "running"
        for verb in (("start", "ws"), ("delete", "ws")):
            out = oci(host, *verb)
            assert out.returncode == 1
            assert f"cannot {verb[0]} container ws: it is running" in out.stderr
            assert state(host, "ws")["status"] == "running"
        out = oci(host, "create", "ws", str(bundle))
        assert out.returncode == 1 and "container id ws already exists" in out.stderr
        assert oci(host, "kill", "ws", "KILL").returncode == 0
        wait_for(lambda: state(host, "ws")["status"] == "stopped", "ws to stop")
        assert store_state(host, "ws")["exit_code"] == 128 + signal.SIGKILL
        for name in ("start", "kill"):
            out = oci(host, name, "ws")
            assert out.returncode == 1 and "it is stopped" in out.stderr
        assert oci(host, "delete", "ws").returncode == 0


def test_delete_force_kills_a_running_container(host: Host, rootfs: Path, bundles: Path) -> None:
    bundle = make_bundle(bundles, rootfs, host, "df", ["sleep", host.marker])
    with nothing_left(host):
        pid = created(host, bundle, "df")["pid"]
        assert oci(host, "start", "df").returncode == 0
        assert oci(host, "delete", "--force", "df").returncode == 0
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_delete_of_a_created_container_kills_it(host: Host, rootfs: Path, bundles: Path) -> None:
    out_dir = sync_dir(bundles)
    change = with_mounts(bind(out_dir, "/sync"))
    bundle = make_bundle(bundles, rootfs, host, "dc", ["touch", "/sync/ran"], change)
    with nothing_left(host):
        created(host, bundle, "dc")
        assert oci(host, "delete", "dc").returncode == 0
    assert not (out_dir / "ran").exists()


@pytest.mark.parametrize(("sig", "code"), [("TERM", 143), ("9", 137), ("SIGUSR1", 138)])
def test_kill_of_a_created_container(
    host: Host, rootfs: Path, bundles: Path, sig: str, code: int
) -> None:
    """A created container's PID 1 (an init) dies of a catchable signal too."""
    bundle = make_bundle(bundles, rootfs, host, "kc", ["sleep", host.marker])
    with nothing_left(host):
        created(host, bundle, "kc")
        assert oci(host, "kill", "kc", sig).returncode == 0
        wait_for(lambda: state(host, "kc")["status"] == "stopped", "kc to stop")
        assert store_state(host, "kc")["exit_code"] == code
        assert oci(host, "start", "kc").returncode == 1
        assert oci(host, "delete", "kc").returncode == 0


def test_kill_defaults_to_sigterm_and_refuses_bad_signals(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    bundle = make_bundle(bundles, rootfs, host, "ks", ["sleep", host.marker])
    with nothing_left(host):
        created(host, bundle, "ks")
        out = oci(host, "kill", "ks", "SIGNOPE")
        assert out.returncode == 1 and "'SIGNOPE'" in out.stderr
        assert state(host, "ks")["status"] == "created"
        assert oci(host, "kill", "ks").returncode == 0
        wait_for(lambda: state(host, "ks")["status"] == "stopped", "ks to stop")
        assert store_state(host, "ks")["exit_code"] == 143
        assert oci(host, "delete", "ks").returncode == 0


def test_an_exec_failure_after_start_is_the_containers_exit(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    bundle = make_bundle(bundles, rootfs, host, "nf", ["/no/such/program"])
    with nothing_left(host):
        created(host, bundle, "nf")
        assert oci(host, "start", "nf").returncode == 0
        wait_for(lambda: state(host, "nf")["status"] == "stopped", "nf to stop")
        assert store_state(host, "nf")["exit_code"] == 127
        assert any("/no/such/program: not found" in line for line in log_lines(host, "nf"))
        assert oci(host, "delete", "nf").returncode == 0


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cid", ["", "-x", "a/b", "..", "x" * 129, "sp ace"])
def test_invalid_ids_are_refused(host: Host, rootfs: Path, bundles: Path, cid: str) -> None:
    bundle = make_bundle(bundles, rootfs, host, "ok", ["true"])
    with nothing_left(host):
        out = oci(host, "create", "--", cid, str(bundle))
        assert out.returncode == 1 and "container id" in out.stderr


def test_limits_this_host_cannot_enforce_are_refused_before_anything(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    def memory(config: Config) -> None:
        config["linux"]["resources"]["memory"] = {"limit": 64 << 20}

    def unified(config: Config) -> None:
        config["linux"]["resources"]["unified"] = {"pids.max": "10"}

    with nothing_left(host):
        for cid, change in (("lm", memory), ("lu", unified)):
            bundle = make_bundle(bundles, rootfs, host, cid, ["true"], change)
            out = oci(host, "create", cid, str(bundle))
            assert out.returncode == 1
            assert "cgroup.controllers" in out.stderr, out.stderr
            assert ("memory" if cid == "lm" else "pids") in out.stderr


def test_a_config_corral_refuses_leaves_nothing(host: Host, rootfs: Path, bundles: Path) -> None:
    def terminal(config: Config) -> None:
        config["process"]["terminal"] = True

    bundle = make_bundle(bundles, rootfs, host, "tt", ["true"], terminal)
    with nothing_left(host):
        out = oci(host, "create", "tt", str(bundle))
        assert out.returncode == 1 and "process.terminal" in out.stderr


def test_a_setup_failure_leaves_nothing(host: Host, rootfs: Path, bundles: Path) -> None:
    change = with_mounts(bind(bundles / "missing", "/m"))
    bundle = make_bundle(bundles, rootfs, host, "sf", ["true"], change)
    with nothing_left(host):
        out = oci(host, "create", "sf", str(bundle))
        assert out.returncode == 1 and "missing" in out.stderr


# -- corral run --bundle ------------------------------------------------------------------------


def test_run_bundle_is_attached_and_exits_with_the_container(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    script = "echo out; echo err >&2; exit 5"
    bundle = make_bundle(bundles, rootfs, host, "rb", ["sh", "-c", script])
    with nothing_left(host):
        out = host.corral("run", "--bundle", str(bundle), "--name", "rb", "--rm")
        assert (out.returncode, out.stdout, out.stderr) == (5, "out\n", "err\n")


def test_run_bundle_detached_is_listed_by_ps(host: Host, rootfs: Path, bundles: Path) -> None:
    bundle = make_bundle(bundles, rootfs, host, "rd", ["sleep", host.marker])
    with nothing_left(host):
        out = host.corral("run", "--bundle", str(bundle), "--name", "rd", "-d")
        assert out.returncode == 0, out.stderr
        assert state(host, "rd")["status"] == "running"
        listed = json.loads(host.corral("ps", "--json").stdout)
        assert [(c["name"], c["cgroup"]) for c in listed] == [("rd", f"{host.parent}/rd")]
        assert oci(host, "delete", "--force", "rd").returncode == 0


def test_run_bundle_refuses_options_the_config_decides(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    bundle = make_bundle(bundles, rootfs, host, "ro", ["true"])
    with nothing_left(host):
        out = host.corral("run", "--bundle", str(bundle), "-e", "A=1")
        assert out.returncode == 2 and "--env" in out.stderr
