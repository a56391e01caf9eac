"""`corral ps`, `inspect`, `rm` and `logs` (corral/cli/containers.py) on states written by the
real StateStore in a temporary state directory; `rm -f` kills a real process in a real
cgroup of this host's unified hierarchy."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corral.cli import main
from corral.cli.containers import human_duration
from runtime.cgroupfs import CgroupFS
from runtime.container.logs import LogWriter, format_time
from runtime.container.record import proc_start_time
from runtime.container.spec import build_spec
from runtime.container.state import SHIM_DIED, Container, StateStore

cli = main


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    return root


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def corral(store: StateStore, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"CORRAL_STATE_DIR": store.root})


def ago(seconds: float) -> str:
    return format_time(time.time_ns() - int(seconds * 1e9))


def container(
    store: StateStore, rootfs: Path, name: str, status: str = "created", **state: object
) -> Container:
    spec = build_spec(
        rootfs=str(rootfs), command=("sh", "-c", "echo hello world; sleep 1"), name=name,
        memory="64m", label=("app=shop",),
    )  # fmt: skip
    c = store.create(spec, cgroup=str(state.pop("cgroup", f"corral/{name}")))
    return store.update(c.id, status=status, **state)


def running(
    store: StateStore, rootfs: Path, name: str, proc: subprocess.Popen[bytes], **state: object
) -> Container:
    return container(
        store, rootfs, name, "running", pid=proc.pid, shim_pid=proc.pid,
        shim_start_time=proc_start_time(proc.pid), started=ago(180), **state,
    )  # fmt: skip


# -- ps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (180, "3 minutes"),
        (3599, "59 minutes"),
        (5399, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (14 * 86400, "2 weeks"),
        (60 * 86400, "2 months"),
        (730 * 86400, "2 years"),
    ],
)
def test_durations_read_as_dockers(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_ps_shows_running_containers_and_all_with_a(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    container(store, rootfs, "fresh")
    done = container(
        store, rootfs, "done", "stopped", exit_code=137, started=ago(600), finished=ago(2)
    )
    up = running(store, rootfs, "up", sleeper)
    result = corral(store, "ps")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["CONTAINER", "ID", "NAME", "COMMAND", "CREATED", "STATUS", "CGROUP"]
    assert len(rows) == 1 and rows[0].startswith(up.short_id + "   up ")
    assert '"sh -c echo hello wo…"' in rows[0] and "Up 3 minutes" in rows[0]
    assert rows[0].endswith("corral/up")
    rows = corral(store, "ps", "-a").stdout.splitlines()[1:]
    assert [r.split()[1] for r in rows] == ["up", "done", "fresh"]  # newest first
    assert "Exited (137) 2 seconds ago" in rows[1] and done.short_id in rows[1]
    assert "Created" in rows[2] and "Less than a second ago" in rows[2]
    full = corral(store, "ps", "--no-trunc").stdout
    assert up.id in full and '"sh -c echo hello world; sleep 1"' in full


def test_ps_json_is_a_list_of_objects(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    assert json.loads(corral(store, "ps", "--json").stdout) == []
    up = running(store, rootfs, "up", sleeper)
    container(store, rootfs, "old", "stopped", exit_code=0, finished=ago(1))
    [obj] = json.loads(corral(store, "ps", "--json").stdout)
    assert obj["id"] == up.id and obj["name"] == "up" and obj["status"] == "running"
    assert obj["pid"] == sleeper.pid and obj["cgroup"] == "corral/up"
    assert obj["command"] == ["sh", "-c", "echo hello world; sleep 1"]
    assert obj["labels"] == {"app": "shop"} and obj["status_text"] == "Up 3 minutes"
    assert len(json.loads(corral(store, "ps", "-a", "--json").stdout)) == 2


def test_ps_tells_the_truth_after_a_shim_crash(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    c = running(store, rootfs, "crashed", sleeper)
    sleeper.kill()
    sleeper.wait()
    assert corral(store, "ps").stdout.splitlines()[1:] == []
    [row] = corral(store, "ps", "-a").stdout.splitlines()[1:]
    assert "Exited (unknown) Less than a second ago" in row
    assert store.get(c.id).error == SHIM_DIED


def test_state_dir_option_wins_over_the_environment(
    store: StateStore, rootfs: Path, tmp_path: Path
) -> None:
    container(store, rootfs, "here")
    result = CliRunner().invoke(
        cli,
        ["ps", "-a", "--state-dir", store.root],
        env={"CORRAL_STATE_DIR": str(tmp_path / "other")},
    )
    assert "here" in result.stdout


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_a_stopped_container(store: StateStore, rootfs: Path) -> None:
    c = container(
        store, rootfs, "done", "stopped", exit_code=137, oom_killed=True,
        started=ago(10), finished=ago(1),
    )  # fmt: skip
    result = corral(store, "inspect", "--json", "done")
    assert result.exit_code == 0, result.output
    [d] = json.loads(result.stdout)
    assert d["id"] == c.id and d["name"] == "done" and d["created"] == c.created
    assert d["state"] == {
        "status": "stopped", "running": False, "pid": None, "shim_pid": None,
        "exit_code": 137, "oom_killed": True, "started": c.started, "finished": c.finished,
        "error": None,
    }  # fmt: skip
    assert d["cgroup"]["path"] == "corral/done" and d["cgroup"]["limits_source"] == "config"
    assert d["cgroup"]["limits"]["memory"] == 64 << 20
    assert d["config"]["command"] == ["sh", "-c", "echo hello world; sleep 1"]
    assert d["log_path"] == store.log_path(c.id)
    text = corral(store, "inspect", c.id[:12]).stdout
    assert "Exit code:" in text and "137" in text and "OOM killed:" in text and "true" in text
    assert "Limits (config):" in text and "memory=67108864" in text


def test_inspect_a_running_container_reads_its_cgroup(
    store: StateStore,
    rootfs: Path,
    sleeper: subprocess.Popen[bytes],
    host: tuple[CgroupFS, str],
) -> None:
    fs, parent = host
    fs.create(f"{parent}/web")
    running(store, rootfs, "web", sleeper, cgroup=f"{parent}/web")
    [d] = json.loads(corral(store, "inspect", "--json", "web").stdout)
    assert d["state"]["running"] and d["state"]["pid"] == sleeper.pid
    assert d["cgroup"]["limits_source"] == "cgroup"
    assert d["cgroup"]["host_path"] == str(fs.root / parent / "web")
    # What the kernel's files say, not the spec: this host's cgroup2 has no memory controller.
    assert "memory" not in d["cgroup"]["limits"]


def test_inspect_of_an_unknown_container_fails_naming_it(store: StateStore, rootfs: Path) -> None:
    result = corral(store, "inspect", "nope")
    assert result.exit_code == 1 and "no such container: nope" in result.stderr
    container(store, rootfs, "known")
    result = corral(store, "inspect", "--json", "known", "nope")
    assert result.exit_code == 1 and "no such container: nope" in result.stderr
    assert [d["name"] for d in json.loads(result.stdout)] == ["known"]


# -- rm ----------------------------------------------------------------------------------------


def test_rm_removes_stopped_containers(store: StateStore, rootfs: Path) -> None:
    container(store, rootfs, "a", "stopped", exit_code=0)
    container(store, rootfs, "b")
    result = corral(store, "rm", "a", "b")
    assert result.exit_code == 0 and result.stdout.split() == ["a", "b"]
    assert store.list() == []


def test_rm_refuses_a_running_container_without_force(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    running(store, rootfs, "web", sleeper)
    container(store, rootfs, "old", "stopped", exit_code=1)
    result = corral(store, "rm", "web", "old", "ghost")
    assert result.exit_code == 1
    assert "container web" in result.stderr and "stop it first" in result.stderr
    assert "rm -f" in result.stderr and "no such container: ghost" in result.stderr
    assert result.stdout.split() == ["old"]
    assert [c.name for c in store.list()] == ["web"] and sleeper.poll() is None


def test_rm_force_kills_the_container_and_removes_its_cgroup(
    store: StateStore,
    rootfs: Path,
    sleeper: subprocess.Popen[bytes],
    host: tuple[CgroupFS, str],
) -> None:
    fs, parent = host
    cgroup = f"{parent}/web"
    fs.create(cgroup)
    fs.move(sleeper.pid, cgroup)
    c = running(store, rootfs, "web", sleeper, cgroup=cgroup)
    result = corral(store, "rm", "-f", "web")
    assert result.exit_code == 0, result.output
    assert sleeper.wait(timeout=5) == -9  # SIGKILL through cgroup.kill
    assert not fs.exists(cgroup)
    assert store.list() == [] and not os.path.exists(store.container_dir(c.id))


# -- logs --------------------------------------------------------------------------------------


def write_log(store: StateStore, c: Container, *chunks: tuple[str, bytes]) -> None:
    with LogWriter(store.log_path(c.id)) as log:
        for stream, data in chunks:
            log.write(stream, data)


def test_logs_prints_each_stream_to_its_own(store: StateStore, rootfs: Path) -> None:
    c = container(store, rootfs, "web", "stopped", exit_code=0)
    assert corral(store, "logs", "web").stdout == ""  # no log yet
    write_log(store, c, ("stdout", b"one\ntwo\n"), ("stderr", b"warn\n"), ("stdout", b"three\n"))
    result = corral(store, "logs", "web")
    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("one\ntwo\nthree\n", "warn\n")
    assert corral(store, "logs", "--tail", "2", "web").output == "warn\nthree\n"
    assert corral(store, "logs", "--tail", "all", "web").stdout == "one\ntwo\nthree\n"
    stamped = corral(store, "logs", "-t", "-n", "1", "web").stdout
    stamp, text = stamped.split(" ", 1)
    assert text == "three\n" and stamp.endswith("Z") and len(stamp) == 30


def test_logs_follow_of_a_container_not_running_prints_and_returns(
    store: StateStore, rootfs: Path
) -> None:
    for c in (container(store, rootfs, "new"), container(store, rootfs, "old", "stopped")):
        write_log(store, c, ("stdout", b"only line\n"))
        result = corral(store, "logs", "-f", c.name)
        assert (result.exit_code, result.stdout) == (0, "only line\n")


def test_logs_errors(store: StateStore) -> None:
    result = corral(store, "logs", "ghost")
    assert result.exit_code == 1 and "no such container: ghost" in result.stderr
    result = corral(store, "logs", "--tail", "-3", "ghost")
    assert result.exit_code == 2 and "--tail" in result.stderr


def test_logs_follow_ends_when_the_container_stops(
    store: StateStore, rootfs: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    c = running(store, rootfs, "web", sleeper)
    write_log(store, c, ("stdout", b"before\n"))

    def container_runs_then_stops() -> None:
        with LogWriter(store.log_path(c.id)) as log:
            for i in range(5):
                time.sleep(0.05)
                log.write("stdout", f"tick {i}\n".encode())
        store.update(c.id, status="stopped", exit_code=0, finished=format_time(time.time_ns()))

    thread = threading.Thread(target=container_runs_then_stops)
    thread.start()
    start = time.monotonic()
    result = corral(store, "logs", "-f", "web")
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == "before\n" + "".join(f"tick {i}\n" for i in range(5))
    assert time.monotonic() - start < 5
