"""runtime.container.record: the shim's state records without the runtime's imports, on a
real state directory (read back through StateStore) and real cgroups of this host's
unified hierarchy."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.mounts import find_cgroup2
from runtime.container import record
from runtime.container.logs import parse_time
from runtime.container.spec import build_spec
from runtime.container.state import Container, ContainerNotFound, StateStore


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


@pytest.fixture(name="cgroup")
def cgroup_fixture() -> Iterator[Path]:
    """An empty cgroup of its own under the unified hierarchy's root."""
    root = find_cgroup2("/proc/self/mountinfo")
    assert root is not None
    fs = CgroupFS(root)
    name = f"corral-unit-record-{os.getpid()}"
    fs.create(name)
    yield Path(str(fs.path(name)))
    if fs.exists(name):
        fs.kill(name)
        fs.remove(name, recursive=True)


def made(store: StateStore, name: str = "rec") -> Container:
    return store.create(build_spec(rootfs="/", command=("true",), name=name))


def test_update_state_writes_what_statestore_reads(store: StateStore) -> None:
    c = made(store)
    assert record.update_state(store.root, c.id, status="running", pid=4242, shim_pid=1)
    got = store.load(c.id)
    assert (got.status, got.pid, got.shim_pid, got.name) == ("running", 4242, 1, "rec")
    path = Path(store.container_dir(c.id)) / "state.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


def test_update_state_of_a_removed_container_changes_nothing(store: StateStore) -> None:
    c = made(store)
    store.remove(c.id)
    assert record.update_state(store.root, c.id, status="stopped") is False
    assert not os.path.exists(store.container_dir(c.id))


def test_update_state_waits_for_the_container_lock(store: StateStore) -> None:
    c = made(store)
    with store.locked(c.id):
        pid = os.fork()
        if pid == 0:
            ok = record.update_state(store.root, c.id, status="stopped", exit_code=3)
            os._exit(0 if ok else 1)
        time.sleep(0.2)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # blocked on flock(2)
        assert store.load(c.id).status == "created"
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert (store.load(c.id).status, store.load(c.id).exit_code) == ("stopped", 3)


def test_update_state_refuses_the_state_of_another_container(store: StateStore) -> None:
    a, b = made(store, "a"), made(store, "b")
    a_state = Path(store.container_dir(a.id)) / "state.json"
    (Path(store.container_dir(b.id)) / "state.json").write_bytes(a_state.read_bytes())
    with pytest.raises(ValueError, match=f"not the state of container {b.id}"):
        record.update_state(store.root, b.id, status="stopped")


def test_remove_state_takes_the_directory_whole(store: StateStore) -> None:
    c = made(store)
    Path(store.log_path(c.id)).write_text("{}\n")
    assert record.remove_state(store.root, c.id)
    with pytest.raises(ContainerNotFound):
        store.get(c.id)
    assert os.listdir(os.path.join(store.root, "tmp")) == []
    assert record.remove_state(store.root, c.id) is False


def test_finish_exit_records_status_code_time(store: StateStore, cgroup: Path) -> None:
    c = made(store)
    before = time.time_ns()
    assert record.finish_exit(store.root, c.id, str(cgroup), 137, rm=False)
    got = store.load(c.id)
    assert (got.status, got.exit_code, got.oom_killed) == ("stopped", 137, False)
    assert got.finished is not None and before <= parse_time(got.finished) <= time.time_ns()
    assert cgroup.is_dir()  # kept for inspect; `corral rm` removes it


def test_finish_exit_rm_removes_the_cgroup_and_the_state(store: StateStore, cgroup: Path) -> None:
    c = made(store)
    assert record.finish_exit(store.root, c.id, str(cgroup), 0, rm=True)
    assert not cgroup.exists()
    assert store.list() == []


def test_a_cgroup_still_in_use_goes_to_the_full_path(store: StateStore, cgroup: Path) -> None:
    c = made(store)
    pid = os.fork()
    if pid == 0:  # a process left in the container's cgroup
        (cgroup / "cgroup.procs").write_text("0")
        time.sleep(60)
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while str(pid) not in (cgroup / "cgroup.procs").read_text().split():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert record.finish_exit(store.root, c.id, str(cgroup), 0, rm=True) is False
        assert cgroup.is_dir() and store.load(c.id).status == "created"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_bridge_networking_goes_to_the_full_path(store: StateStore, cgroup: Path) -> None:
    c = made(store)
    network = Path(store.root) / "network"
    network.mkdir()
    (network / "leases.json").write_text("{}")
    assert record.finish_exit(store.root, c.id, str(cgroup), 0, rm=True) is False
    assert cgroup.is_dir() and store.load(c.id).status == "created"
    assert record.finish_exit(store.root, c.id, str(cgroup), 0, rm=False) is False
    assert store.load(c.id).status == "created"


def test_oom_killed_reads_memory_events(tmp_path: Path) -> None:
    assert record.oom_killed(str(tmp_path)) is False  # no memory controller: no file
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 0\n")
    assert record.oom_killed(str(tmp_path)) is False
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n")
    assert record.oom_killed(str(tmp_path)) is True


def test_proc_start_time_tells_a_live_process_from_a_gone_one() -> None:
    assert isinstance(record.proc_start_time(os.getpid()), int)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    time.sleep(0.05)
    assert record.proc_start_time(pid) is None  # a zombie until reaped
    os.waitpid(pid, 0)
    assert record.proc_start_time(pid) is None
