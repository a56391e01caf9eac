"""StateStore (runtime/container/state.py) in temporary state directories: ids, names,
references, atomic writes, flock(2) between real processes, reconciliation with real
processes, and monitor.naming reading what the store wrote."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.naming import Namer
from runtime.container.config import spec_from_dict
from runtime.container.logs import parse_time
from runtime.container.spec import ContainerSpec, build_spec
from runtime.container.state import (
    SHIM_DIED,
    AmbiguousReference,
    ContainerNotFound,
    NameInUse,
    StateStore,
    proc_start_time,
)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    return root


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def make_spec(rootfs: Path, name: str | None = None, **options: Any) -> ContainerSpec:
    return build_spec(rootfs=str(rootfs), command=("sleep", "1"), name=name, **options)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- create -------------------------------------------------------------------------------


def test_create_writes_config_and_state_whole(store: StateStore, rootfs: Path) -> None:
    spec = make_spec(rootfs, "web", label=("tier=front",))
    before = time.time_ns()
    c = store.create(spec)
    assert re.fullmatch(r"[0-9a-f]{64}", c.id) and c.short_id == c.id[:12]
    assert (c.name, c.status, c.cgroup, c.spec) == ("web", "created", "corral/web", spec)
    assert before <= parse_time(c.created) <= time.time_ns()
    root = Path(store.root)
    assert files_under(root / "containers") == [
        c.id,
        f"{c.id}/config.json",
        f"{c.id}/lock",
        f"{c.id}/state.json",
    ]
    assert list((root / "tmp").iterdir()) == []
    d = root / "containers" / c.id
    assert spec_from_dict(json.loads((d / "config.json").read_text())) == spec
    state = json.loads((d / "state.json").read_text())
    assert state["id"] == c.id and state["labels"] == {"tier": "front"}
    assert state["status"] == "created" and state["exit_code"] is None
    # config.json holds the environment (secrets): root only; state.json is for the monitor.
    assert (d / "config.json").stat().st_mode & 0o777 == 0o600
    assert (d / "state.json").stat().st_mode & 0o777 == 0o644
    assert store.get(c.id) == c


def test_the_monitor_names_a_container_from_the_state_written(
    store: StateStore, rootfs: Path
) -> None:
    c = store.create(make_spec(rootfs, "web", label=("app=shop", "tier=front")))
    other = store.create(make_spec(rootfs, "db"), cgroup="elsewhere/db")
    namer = Namer(store.root)
    name = namer.name("corral/web")
    assert (name.kind, name.name, name.id, name.labels) == (
        "container",
        "web",
        c.id,
        {"app": "shop", "tier": "front"},
    )
    assert namer.name("elsewhere/db").id == other.id
    store.update(c.id, status="running", pid=os.getpid())
    assert namer.name("corral/web").name == "web" and namer.invalid_states == 0


def test_a_given_name_in_use_is_refused_naming_the_owner(store: StateStore, rootfs: Path) -> None:
    first = store.create(make_spec(rootfs, "web"))
    with pytest.raises(NameInUse) as err:
        store.create(make_spec(rootfs, "web"))
    assert first.short_id in str(err.value) and "corral rm web" in str(err.value)
    assert [c.id for c in store.list()] == [first.id]
    store.remove(first.id)
    assert store.create(make_spec(rootfs, "web")).name == "web"


def test_a_generated_name_in_use_is_replaced(store: StateStore, rootfs: Path) -> None:
    spec = make_spec(rootfs)
    first = store.create(spec)
    second = store.create(spec)  # the same generated name again
    assert second.name != first.name and second.spec.generated_name
    assert second.spec.hostname == second.name and f"HOSTNAME={second.name}" in second.spec.env


def test_create_clears_what_a_crashed_create_left(store: StateStore, rootfs: Path) -> None:
    store.create(make_spec(rootfs, "a"))
    leftover = Path(store.root) / "tmp" / ("0" * 64)
    leftover.mkdir()
    (leftover / "state.json").write_text("{")
    store.create(make_spec(rootfs, "b"))
    assert not leftover.exists()


def _create_racing(root: str, spec: ContainerSpec, go: int) -> None:
    os.read(go, 1)  # every child waits here until the parent closes the pipe
    try:
        StateStore(root).create(spec)
    except NameInUse:
        os._exit(3)
    except BaseException:
        os._exit(1)
    os._exit(0)


def test_racing_creates_of_one_name_leave_exactly_one(store: StateStore, rootfs: Path) -> None:
    spec = make_spec(rootfs, "contended")
    go_read, go_write = os.pipe()
    pids = []
    for _ in range(16):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(go_write)
            _create_racing(store.root, spec, go_read)
        pids.append(pid)
    os.close(go_read)
    time.sleep(0.2)
    os.close(go_write)  # all start at once
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids)
    assert codes == [0] + [3] * 15
    [c] = store.list()
    assert c.name == "contended" and store.skipped == []
    assert list((Path(store.root) / "tmp").iterdir()) == []


# -- references ----------------------------------------------------------------------------


def test_references_are_full_id_then_name_then_unique_prefix(
    store: StateStore, rootfs: Path
) -> None:
    cs = [store.create(make_spec(rootfs, f"c{i}")) for i in range(17)]
    by_first: dict[str, list[str]] = {}
    for c in cs:
        by_first.setdefault(c.id[0], []).append(c.id)
    shared = next(ids for ids in by_first.values() if len(ids) > 1)  # 17 ids, 16 digits
    with pytest.raises(AmbiguousReference, match=f"{shared[0][0]!r} matches"):
        store.get(shared[0][0])
    for c in cs:
        assert store.get(c.id).id == c.id and store.get(c.name).id == c.id
        assert store.get(c.id[:12]).id == c.id
    named_like_prefix = store.create(make_spec(rootfs, cs[0].id[:8]))
    assert store.get(cs[0].id[:8]).id == named_like_prefix.id  # a name before a prefix
    with pytest.raises(ContainerNotFound, match="no such container: nope"):
        store.get("nope")
    with pytest.raises(ContainerNotFound):
        store.get("")


def test_an_empty_or_missing_state_dir_has_no_containers(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "absent")
    assert store.list() == []
    with pytest.raises(ContainerNotFound):
        store.get("web")
    assert not (tmp_path / "absent").exists()  # reading creates nothing


def test_list_is_oldest_first_and_skips_unreadable_states(store: StateStore, rootfs: Path) -> None:
    a = store.create(make_spec(rootfs, "a"))
    b = store.create(make_spec(rootfs, "b"))
    broken = Path(store.root) / "containers" / ("f" * 64)
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "state.json").write_text("{}")
    (Path(store.root) / "containers" / "not-an-id").mkdir()
    assert [c.name for c in store.list()] == ["a", "b"]
    assert store.skipped == ["f" * 64]
    assert store.get("b") == b and store.get(a.id) == a


# -- update, locking, remove -----------------------------------------------------------------


def test_update_replaces_state_json_atomically(store: StateStore, rootfs: Path) -> None:
    c = store.create(make_spec(rootfs, "web"))
    path = Path(store.container_dir(c.id)) / "state.json"
    inode = path.stat().st_ino
    updated = store.update(
        c.id, status="running", pid=42, shim_pid=41, started="2024-01-01T00:00:00Z"
    )
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert (updated.status, updated.pid, updated.shim_pid) == ("running", 42, 41)
    assert store.get("web") == updated
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "change",
    [
        {"status": "paused"},
        {"pid": "42"},
        {"pid": True},
        {"name": "other"},
        {"oom_killed": None},
        {"id": "x"},
    ],
)
def test_update_refuses_unknown_fields_and_values(
    store: StateStore, rootfs: Path, change: dict[str, object]
) -> None:
    c = store.create(make_spec(rootfs, "web"))
    with pytest.raises(ValueError, match=next(iter(change))):
        store.update(c.id, **change)
    assert store.get(c.id) == c


def test_locked_excludes_another_process_and_reenters_in_this_one(
    store: StateStore, rootfs: Path
) -> None:
    c = store.create(make_spec(rootfs, "web"))
    done_read, done_write = os.pipe()
    with store.locked("web") as held:
        assert held == c
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child: blocks in flock until the parent is done
            StateStore(store.root).update(c.id, status="running")
            os.write(done_write, str(time.monotonic()).encode())
            os._exit(0)
        time.sleep(0.5)
        inside = store.update(c.id, exit_code=7)  # re-entered, no deadlock
        released = time.monotonic()
    child_done = float(os.read(done_read, 64))
    os.waitpid(pid, 0)
    assert inside.exit_code == 7
    assert child_done >= released
    final = store.get(c.id)
    assert (final.status, final.exit_code) == ("running", 7)


def test_remove_takes_the_whole_directory_away(store: StateStore, rootfs: Path) -> None:
    c = store.create(make_spec(rootfs, "web"))
    Path(store.log_path(c.id)).write_text("{}\n")
    store.remove(c.id)
    assert files_under(Path(store.root) / "containers") == []
    assert list((Path(store.root) / "tmp").iterdir()) == []
    for call in (lambda: store.get(c.id), lambda: store.remove(c.id)):
        with pytest.raises(ContainerNotFound):
            call()
    with pytest.raises(ContainerNotFound), store.locked(c.id[:12]):
        pass


def test_update_and_locked_after_remove_say_not_found(store: StateStore, rootfs: Path) -> None:
    c = store.create(make_spec(rootfs, "web"))
    with store.locked("web"):
        store.remove(c.id)
    with pytest.raises(ContainerNotFound):
        store.update(c.id, status="stopped")


# -- reconciliation ----------------------------------------------------------------------


def running(store: StateStore, rootfs: Path, shim: int, start: int | None) -> str:
    c = store.create(make_spec(rootfs, "web"))
    store.update(c.id, status="running", pid=shim, shim_pid=shim, shim_start_time=start)
    return c.id


def test_a_live_shim_keeps_the_container_running(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    cid = running(store, rootfs, sleeper.pid, proc_start_time(sleeper.pid))
    c = store.get(cid)
    assert store.refresh(c) == c


def test_a_dead_shim_is_recorded_as_stopped(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    cid = running(store, rootfs, sleeper.pid, proc_start_time(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    c = store.refresh(store.get(cid))
    assert (c.status, c.exit_code, c.error, c.pid) == ("stopped", None, SHIM_DIED, None)
    assert c.finished is not None and store.get(cid) == c


def test_a_zombie_shim_counts_as_dead(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    cid = running(store, rootfs, sleeper.pid, proc_start_time(sleeper.pid))
    os.kill(sleeper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{sleeper.pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert proc_start_time(sleeper.pid) is None  # not reaped yet: a zombie
    assert store.refresh(store.get(cid)).error == SHIM_DIED


def test_a_reused_pid_is_not_taken_for_the_shim(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    start = proc_start_time(sleeper.pid)
    assert start is not None
    cid = running(store, rootfs, sleeper.pid, start - 1)  # another process had this pid
    assert store.refresh(store.get(cid)).status == "stopped"


def test_stopped_and_not_yet_started_containers_are_left_alone(
    store: StateStore, rootfs: Path
) -> None:
    created = store.create(make_spec(rootfs, "new"))
    assert store.refresh(created) == created  # no shim yet: `corral run` is starting it
    stopped = store.update(store.create(make_spec(rootfs, "old")).id, status="stopped")
    assert store.refresh(stopped) == stopped


def test_start_time_survives_a_comm_with_spaces_and_parentheses(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.write_bytes(Path(shutil.which("sleep") or "/bin/sleep").read_bytes())
    odd.chmod(0o755)
    proc = subprocess.Popen([str(odd), "60"])
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        assert stat.startswith(f"{proc.pid} (a) b (c) ")
        assert proc_start_time(proc.pid) == int(stat.rsplit(")", 1)[1].split()[19])
    finally:
        proc.kill()
        proc.wait()
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    assert proc_start_time(os.getpid()) == int(fields[19])
    assert proc_start_time(2**22 + 1) is None  # above pid_max: no such process


def test_update_spec_replaces_the_config_but_never_the_name(
    store: StateStore, rootfs: Path
) -> None:
    created = store.create(make_spec(rootfs, "keep"))
    changed = dataclasses.replace(created.spec, hostname="elsewhere")
    assert store.update_spec(created.id, changed).spec.hostname == "elsewhere"
    assert store.get("keep").spec == changed
    with pytest.raises(ValueError, match="name"):
        store.update_spec(created.id, dataclasses.replace(changed, name="other"))
    assert store.get("keep").spec == changed
