"""`corral oci` on a real cgroup v2, over a bundle from `runc spec` on a busybox rootfs: the
whole lifecycle (create leaves PID 1 blocked before execve, start runs the command, its exit
code is recorded, delete removes the cgroup and the state), linux.resources and unified read
back from the kernel's files, a namespace joined by path, and wrong-state verbs refused.

The verbs are called in-process (runtime.oci.lifecycle: the shim they start is a separate
process anyway), and once through the CLI; the containers' cgroups live under
``corral-test/oci`` (conftest's parent, with every controller enabled).
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
from kernel_harness import START_TIMEOUT, wait_until

from runtime.cgroupfs import CgroupFS
from runtime.container.state import StateStore
from runtime.oci import lifecycle
from runtime.oci.state import OciStateError, oci_status, state_json
from runtime.rootfs.busybox import build_busybox

ROOT = Path(__file__).resolve().parents[2]
PARENT = "corral-test/oci"
OCI_CLI = "from corral.cli.oci import oci; oci(prog_name='corral oci')"
Config = dict[str, Any]


@pytest.fixture(scope="module", name="rootfs")
def rootfs_fixture() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="corral-oci-"))
    base.chmod(0o755)
    build_busybox(str(base / "rootfs"))
    yield base / "rootfs"
    shutil.rmtree(base)


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> Iterator[StateStore]:
    """A state directory; every container left in it is deleted (forced) afterwards."""
    store = StateStore(tmp_path / "state")
    yield store
    for container in store.list():
        lifecycle.delete(container.name, store, force=True)


def bundle_of(
    tmp_path: Path, rootfs: Path, cid: str, args: list[str],
    change: Callable[[Config], None] | None = None,
) -> Path:  # fmt: skip
    bundle = tmp_path / cid
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["path"] = str(rootfs)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["linux"]["cgroupsPath"] = f"/{PARENT}/{cid}"
    if change is not None:
        change(config)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def status_of(store: StateStore, cid: str) -> str:
    return oci_status(lifecycle.state(cid, store))


def test_create_start_stop_delete(tmp_path: Path, rootfs: Path, store: StateStore) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def sync(config: Config) -> None:
        config["mounts"].append(
            {"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]}
        )

    bundle = bundle_of(tmp_path, rootfs, "life", ["sh", "-c", "echo ran > /out/ran; exit 42"], sync)
    fs = CgroupFS()
    started = lifecycle.create("life", str(bundle), store, pid_file=str(tmp_path / "pid"))
    pid = started.pid
    assert status_of(store, "life") == "created"
    assert (tmp_path / "pid").read_text() == str(pid)
    assert fs.procs(f"{PARENT}/life") == [pid]  # PID 1 is in its cgroup, blocked
    assert not (out / "ran").exists()
    lifecycle.start("life", store)
    wait_until(lambda: status_of(store, "life") == "stopped", START_TIMEOUT, "life to stop")
    assert (out / "ran").read_text() == "ran\n"
    container = lifecycle.state("life", store)
    assert container.exit_code == 42 and state_json(container)["pid"] == 0
    with pytest.raises(OciStateError, match="it is stopped"):
        lifecycle.start("life", store)
    lifecycle.delete("life", store)
    assert not fs.exists(f"{PARENT}/life") and store.list() == []


def test_resources_are_read_back_from_the_kernel(
    tmp_path: Path, rootfs: Path, store: StateStore
) -> None:
    def limits(config: Config) -> None:
        config["linux"]["resources"].update(
            memory={"limit": 64 << 20, "reservation": 16 << 20},
            cpu={"quota": 50000, "period": 100000, "shares": 1024},
            pids={"limit": 42},
            unified={"memory.high": "50331648"},
        )

    bundle = bundle_of(tmp_path, rootfs, "lim", ["true"], limits)
    lifecycle.create("lim", str(bundle), store)
    cgroup = Path("/sys/fs/cgroup") / PARENT / "lim"
    names = ("memory.max", "memory.low", "memory.high", "cpu.max", "cpu.weight", "pids.max")
    files = {name: (cgroup / name).read_text().strip() for name in names}
    assert files == {
        "memory.max": str(64 << 20), "memory.low": str(16 << 20), "memory.high": "50331648",
        "cpu.max": "50000 100000", "cpu.weight": "39", "pids.max": "42",
    }  # fmt: skip
    lifecycle.delete("lim", store)  # a created container: killed, then removed
    assert not cgroup.exists()


def test_a_namespace_joined_by_path(tmp_path: Path, rootfs: Path, store: StateStore) -> None:
    first = bundle_of(tmp_path, rootfs, "owner", ["sleep", "1000"])
    owner = lifecycle.create("owner", str(first), store).pid

    def join(config: Config) -> None:
        config["hostname"] = None
        for ns in config["linux"]["namespaces"]:
            if ns["type"] in ("network", "uts"):
                ns["path"] = f"/proc/{owner}/ns/{'net' if ns['type'] == 'network' else 'uts'}"

    second = bundle_of(tmp_path, rootfs, "joiner", ["hostname"], join)
    pid = lifecycle.create("joiner", str(second), store).pid
    for kind, same in (("net", True), ("uts", True), ("ipc", False), ("pid", False)):
        mine, theirs = (
            os.readlink(f"/proc/{pid}/ns/{kind}"),
            os.readlink(f"/proc/{owner}/ns/{kind}"),
        )
        assert (mine == theirs) is same, kind


def test_wrong_state_verbs(tmp_path: Path, rootfs: Path, store: StateStore) -> None:
    """Refused with the status named, changing nothing; the CLI once (python's start-up is
    slow under emulation): exit status 1 and the message."""
    bundle = bundle_of(tmp_path, rootfs, "wrong", ["sleep", "1000"])
    lifecycle.create("wrong", str(bundle), store)
    lifecycle.start("wrong", store)
    env = dict(os.environ, CORRAL_STATE_DIR=store.root, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", OCI_CLI, "delete", "wrong"]
    refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert refused.returncode == 1 and "it is running" in refused.stderr
    with pytest.raises(OciStateError, match="it is running"):
        lifecycle.start("wrong", store)
    assert status_of(store, "wrong") == "running"
    assert (Path("/sys/fs/cgroup") / PARENT / "wrong").exists()
    lifecycle.kill("wrong", store, signal.SIGKILL)
    wait_until(lambda: status_of(store, "wrong") == "stopped", START_TIMEOUT, "wrong to stop")
    with pytest.raises(OciStateError, match="it is stopped"):
        lifecycle.kill("wrong", store, signal.SIGTERM)
    lifecycle.delete("wrong", store)
    assert not (Path("/sys/fs/cgroup") / PARENT / "wrong").exists()
