"""Bundles made by the usual tools run under `corral run --bundle`, on this host.

- `runc spec` over a busybox rootfs (process.terminal turned off, args set), and
- `umoci unpack` of an image built here with umoci from the same rootfs (its Cmd becomes
  process.args, umoci adds HOME=/root to the environment), terminal turned off,

both made by tools/make_bundle.py. Each runs under corral and, side by side, under runc
(crun refuses this host's hybrid cgroup layout; the machine's parity tests cover it): the
exit status, stdout, hostname and environment must be the same. Neither generator sets
cgroup limits beyond the device rules, so the bundles run here without cgroup v2 controllers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from make_bundle import busybox_bundle, edit_config, load_config, umoci_bundle  # noqa: E402

CORRAL = (sys.executable, "-m", "corral")
PROBE = 'echo "host=$(hostname) home=$HOME cwd=$(pwd) uid=$(id -u)"; echo out; echo err >&2; exit 3'


def runc(bundle: Path, state: Path) -> subprocess.CompletedProcess[str]:
    argv = ["runc", "--root", str(state / "runc"), "run", "--bundle", str(bundle),
            f"e2e-{uuid.uuid4().hex[:10]}"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def corral(bundle: Path, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [*CORRAL, "run", "--state-dir", str(state / "corral"), *extra, "--bundle", str(bundle)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # A container left behind by a failed assertion: force-deleted (killed first if it runs).
    root = str(tmp_path / "state" / "runc")
    listed = subprocess.run(["runc", "--root", root, "list", "-q"], capture_output=True, text=True)
    for cid in listed.stdout.split():
        subprocess.run(["runc", "--root", root, "delete", "-f", cid], capture_output=True)
    state = tmp_path / "state" / "corral"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CORRAL_STATE_DIR=str(state))
    for path in state.glob("containers/*/state.json"):
        name = json.loads(path.read_text()).get("name", path.parent.name)
        subprocess.run([*CORRAL, "oci", "delete", "-f", name], capture_output=True, env=env)


@pytest.mark.parametrize("make", [busybox_bundle, umoci_bundle], ids=["runc-spec", "umoci"])
def test_bundle_runs_under_corral_as_under_runc(make: object, work: Path) -> None:
    assert callable(make)
    bundle = make(work / "bundle", ("sh", "-c", PROBE), CORRAL)
    config = load_config(bundle)
    assert config["process"]["terminal"] is False
    assert config["process"]["args"] == ["sh", "-c", PROBE]
    by_runc = runc(bundle, work / "state")
    by_corral = corral(bundle, work / "state", "--rm")
    assert by_runc.returncode == 3, by_runc.stderr
    assert (by_corral.returncode, by_corral.stdout, by_corral.stderr) == (
        by_runc.returncode, by_runc.stdout, by_runc.stderr
    )  # fmt: skip
    first = by_corral.stdout.splitlines()[0]
    hostname = config.get("hostname", "")
    # runc (and crun) set HOME from the rootfs's /etc/passwd when process.env has none.
    assert first == f"host={hostname} home=/root cwd=/ uid=0"


def test_umoci_bundle_env_comes_from_the_image(work: Path) -> None:
    bundle = umoci_bundle(work / "bundle", ("env",), CORRAL)
    env = load_config(bundle)["process"]["env"]
    out = corral(bundle, work / "state", "--rm")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == sorted(env)
    assert "HOME=/root" in env


def test_runc_spec_bundle_with_terminal_is_refused_naming_the_field(work: Path) -> None:
    bundle = busybox_bundle(work / "bundle", ("true",), CORRAL)
    edit_config(bundle, lambda c: c["process"].update(terminal=True))
    out = corral(bundle, work / "state")
    assert out.returncode == 125, out.stderr
    assert "process.terminal" in out.stderr
    state = work / "state" / "corral" / "containers"
    assert not state.exists() or not list(state.iterdir()), "refused bundle left state behind"


def test_read_only_root_and_masked_paths_hold(work: Path) -> None:
    script = "touch /x 2>/dev/null && echo root-writable; cat /proc/kcore | wc -c; echo done"
    bundle = busybox_bundle(work / "bundle", ("sh", "-c", script), CORRAL)
    assert load_config(bundle)["root"]["readonly"] is True
    out = corral(bundle, work / "state", "--rm")
    assert (out.returncode, out.stdout.split()) == (0, ["0", "done"]), out.stderr
    assert not (bundle / "rootfs" / "x").exists()


def test_make_bundle_cli_refuses_a_non_empty_directory(work: Path) -> None:
    (work / "bundle").mkdir()
    (work / "bundle" / "file").write_text("x")
    argv = [sys.executable, str(ROOT / "tools" / "make_bundle.py"), "busybox", str(work / "bundle")]
    out = subprocess.run(
        argv, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    assert out.returncode == 1
    assert "not empty" in out.stderr
    assert [p.name for p in (work / "bundle").iterdir()] == ["file"]


def oci_verbs(runtime: str, state: Path) -> list[str]:
    if runtime == "runc":
        return ["runc", "--root", str(state / "runc")]
    return [*CORRAL, "oci"]  # its state directory from CORRAL_STATE_DIR (see verb)


def verb(runtime: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One OCI verb; the container inherits stdin/stdout, so they are not pipes here."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), CORRAL_STATE_DIR=str(state / "corral"))
    argv = [*oci_verbs(runtime, state), *args]
    with open(state / f"{runtime}.err", "w+") as err:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
                             if args[0] == "state" else subprocess.DEVNULL, stderr=err,
                             text=True, env=env, timeout=60)  # fmt: skip
        err.seek(0)
        out.stderr = err.read()
    return out


def status_of(runtime: str, state: Path, cid: str) -> dict[str, object]:
    out = verb(runtime, state, "state", cid)
    assert out.returncode == 0, f"{runtime} state: {out.stderr}"
    found: dict[str, object] = json.loads(out.stdout)
    return found


@pytest.mark.parametrize("runtime", ["runc", "corral"])
def test_oci_verbs_walk_the_state_machine(runtime: str, work: Path) -> None:
    """create -> created (PID 1 waiting) -> start -> running -> kill KILL -> stopped ->
    delete -> unknown; the state JSON has the runtime-spec keys, as runc's has."""
    bundle = busybox_bundle(work / "bundle", ("sleep", "60"), CORRAL)
    state = work / "state"
    state.mkdir()
    cid = f"e2e-{uuid.uuid4().hex[:8]}"
    assert verb(runtime, state, "create", "--bundle", str(bundle), cid).returncode == 0
    created = status_of(runtime, state, cid)
    assert {"ociVersion", "id", "status", "pid", "bundle"} <= set(created)
    assert (created["id"], created["status"], created["bundle"]) == (cid, "created", str(bundle))
    assert isinstance(created["pid"], int) and created["pid"] > 0
    assert verb(runtime, state, "start", cid).returncode == 0
    assert status_of(runtime, state, cid)["status"] == "running"
    assert verb(runtime, state, "kill", cid, "KILL").returncode == 0
    deadline = time.monotonic() + 30
    while status_of(runtime, state, cid)["status"] != "stopped":
        assert time.monotonic() < deadline, f"{runtime}: not stopped 30 s after kill"
        time.sleep(0.1)
    assert verb(runtime, state, "delete", cid).returncode == 0
    gone = verb(runtime, state, "state", cid)
    assert gone.returncode != 0, gone.stdout
    # corral's errors name the value that was wrong (runc says "container does not exist").
    assert runtime == "runc" or cid in gone.stderr, gone.stderr
