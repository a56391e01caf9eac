"""`corral run` on this host, through the real CLI in a subprocess: exit statuses, attached
output, the log, signal forwarding, --rm, and bad input leaving nothing behind.

Every test gets its own state directory and its own cgroup parent (CORRAL_CGROUP_PARENT, a
child of the unified hierarchy's root), so that "nothing left" can be checked exactly: no
cgroup under the parent, no state directory, no new mount in /proc/self/mountinfo, no
process carrying the test's marker. The helpers here are shared with
test_container_isolation.py and test_container_lifecycle.py.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.mounts import find_cgroup2
from runtime.container import lifecycle
from runtime.container.exec import environment_of
from runtime.container.init import exit_status
from runtime.container.logs import MAX_LINE, LogReader, LogWriter
from runtime.container.process import ProcessConfig
from runtime.container.shim import JsonLog
from runtime.container.spec import build_spec
from runtime.rootfs.busybox import build_busybox

CLI = """
from corral.cli import main
main(prog_name="corral")
"""
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
_serial = itertools.count()


@pytest.fixture(scope="session", name="rootfs")
def rootfs_fixture() -> Iterator[Path]:
    """A busybox root filesystem every uid can traverse (a userns root is an unprivileged
    host uid: pytest's tmp directories are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="corral-run-", dir="/tmp"))
    base.chmod(0o755)
    build_busybox(str(base / "rootfs"))
    yield base / "rootfs"
    shutil.rmtree(base)


@dataclass
class Host:
    """A test's state directory, cgroup parent and marker, and what it can observe."""

    state_dir: Path
    parent: str
    fs: CgroupFS
    marker: str

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, CORRAL_STATE_DIR=str(self.state_dir))
        env["CORRAL_CGROUP_PARENT"] = self.parent
        env["PYTHONPATH"] = str(ROOT)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-c", CLI, *args]

    def corral(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def cgroups(self) -> list[str]:
        if not self.fs.exists(self.parent):
            return []
        return self.fs.children(self.parent)

    def containers(self) -> list[str]:
        path = self.state_dir / "containers"
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def processes(self) -> list[int]:
        """Pids whose command line holds the marker or the state directory (shims)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            text = cmdline.decode(errors="replace")
            if self.marker in text or str(self.state_dir) in text:
                found.append(int(entry))
        return found

    def inspect(self, ref: str) -> dict[str, Any]:
        """`corral inspect --json REF`'s "state" object (status, pid, exit_code, ...)."""
        out = self.corral("inspect", "--json", ref)
        assert out.returncode == 0, out.stderr
        state: dict[str, Any] = json.loads(out.stdout)[0]["state"]
        return state

    def wait_status(self, ref: str, status: str) -> dict[str, Any]:
        wait_for(lambda: self.inspect(ref)["status"] == status, f"{ref} to be {status}")
        return self.inspect(ref)


def mountinfo() -> list[str]:
    return [line.split(" ", 4)[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


@pytest.fixture(name="host")
def host_fixture(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Host]:
    """A state dir and cgroup parent for one test; the parent is removed afterwards."""
    cgroup2 = find_cgroup2("/proc/self/mountinfo")
    assert cgroup2 is not None
    fs = CgroupFS(cgroup2)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:40]
    # The marker is a number: `sleep MARKER` is a long sleep that is easy to find in /proc.
    marker = f"9{os.getpid():07d}{next(_serial):04d}"
    h = Host(tmp_path / "state", f"corral-unit-{os.getpid()}-{name}", fs, marker)
    try:
        yield h
    finally:
        for child in h.cgroups():
            fs.kill(f"{h.parent}/{child}")
        deadline = time.monotonic() + 10
        while any(fs.procs(f"{h.parent}/{c}") for c in h.cgroups()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        if fs.exists(h.parent):
            fs.remove(h.parent, recursive=True)


@contextmanager
def nothing_left(host: Host) -> Iterator[None]:
    """Assert that the block leaves no cgroup, state directory, mount or marked process."""
    mounts, cgroups, containers = set(mountinfo()), host.cgroups(), host.containers()
    processes = set(host.processes())
    yield
    deadline = time.monotonic() + 10
    while set(host.processes()) - processes and time.monotonic() < deadline:
        time.sleep(0.05)  # a shim finishing its --rm clean-up
    assert set(host.processes()) - processes == set()
    assert host.cgroups() == cgroups
    assert host.containers() == containers
    assert set(mountinfo()) - mounts == set()


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- exit statuses and output ------------------------------------------------------------------


def test_exit_status_and_output_are_the_containers(host: Host, rootfs: Path) -> None:
    out = host.corral("run", str(rootfs), "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (out.returncode, out.stdout, out.stderr) == (7, "out\n", "err\n")
    (cid,) = host.containers()
    assert host.inspect(cid)["exit_code"] == 7
    entries = list(LogReader(host.state_dir / "containers" / cid / "log.jsonl").entries())
    assert [(e.stream, e.log) for e in entries] == [("stdout", "out\n"), ("stderr", "err\n")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:]{8}\.\d{9}Z", e.time) for e in entries)


def test_the_exit_is_recorded_in_the_state(host: Host, rootfs: Path) -> None:
    out = host.corral("run", "--name", "rec", str(rootfs), "--", "sh", "-c", "exit 3")
    assert out.returncode == 3
    (cid,) = host.containers()
    state = json.loads((host.state_dir / "containers" / cid / "state.json").read_text())
    assert state["status"] == "stopped" and state["exit_code"] == 3 and state["oom_killed"] is False
    assert state["started"] <= state["finished"] and state["cgroup"].startswith(host.parent + "/")


def test_a_death_by_signal_exits_128_plus_n(host: Host, rootfs: Path) -> None:
    run = host.popen("run", "--name", "victim", str(rootfs), "--", "sleep", host.marker)
    wait_for(lambda: host.containers(), "the container to exist")
    host.wait_status("victim", "running")
    assert host.corral("kill", "-s", "KILL", "victim").returncode == 0
    assert run.wait(TIMEOUT) == 128 + signal.SIGKILL


@pytest.mark.parametrize(
    ("command", "status", "message"),
    [
        (["nosuchcommand"], 127, "nosuchcommand: not found"),
        (["/etc/passwd"], 126, "/etc/passwd: cannot be executed"),
        (["/etc"], 126, "/etc: cannot be executed"),
    ],
)
def test_exec_failures_are_126_127_and_leave_nothing(
    host: Host, rootfs: Path, command: list[str], status: int, message: str
) -> None:
    with nothing_left(host):
        out = host.corral("run", str(rootfs), "--", *command)
    assert out.returncode == status, out.stderr
    assert message in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/rootfs", "--", "true"], "ROOTFS '/nonexistent/rootfs': does not exist"),
        (["--memory", "lots", "ROOTFS", "--", "true"], "--memory"),
        (["--memory", "64m", "ROOTFS", "--", "true"], "memory controller"),
        (["--pids-limit", "10", "ROOTFS", "--", "true"], "pids controller"),
        (["--cpus", "0.5", "ROOTFS", "--", "true"], "cpu controller"),
        (["--network", "overlay", "ROOTFS", "--", "true"], "--network 'overlay'"),
        (["--cap-add", "CAP_NOPE", "ROOTFS", "--", "true"], "CAP_NOPE"),
        (["-u", "root", "ROOTFS", "--", "true"], "-u/--user"),
        (["--time-offset", "monotonic=x", "ROOTFS", "--", "true"], "--time-offset"),
    ],
)
def test_bad_input_is_125_with_a_clear_error_and_leaves_nothing(
    host: Host, rootfs: Path, args: list[str], message: str
) -> None:
    args = [str(rootfs) if a == "ROOTFS" else a for a in args]
    with nothing_left(host):
        out = host.corral("run", *args)
    assert out.returncode == 125, out.stderr
    assert message in out.stderr and out.stderr.startswith("corral run: ")


def test_a_duplicate_name_is_refused_and_the_first_container_is_untouched(
    host: Host, rootfs: Path
) -> None:
    first = host.corral("run", "-d", "--name", "dup", str(rootfs), "--", "sleep", host.marker)
    assert first.returncode == 0, first.stderr
    before = host.inspect("dup")
    with nothing_left(host):
        again = host.corral("run", "--name", "dup", str(rootfs), "--", "true")
    assert again.returncode == 125 and "name 'dup' is already in use" in again.stderr
    assert host.inspect("dup") == before
    assert host.corral("kill", "dup").returncode == 0


@pytest.mark.parametrize(
    "verb", [["stop"], ["kill"], ["exec", "ghost", "--", "true"], ["update", "--cpu-weight", "5"]]
)
def test_an_unknown_container_is_125(host: Host, verb: list[str]) -> None:
    args = verb if "ghost" in verb else [*verb, "ghost"]
    with nothing_left(host):
        out = host.corral(*args)
    assert out.returncode == 125 and "no such container: ghost" in out.stderr, out.stderr


# -- signals, --rm, the shim ----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1])
def test_the_foreground_cli_forwards_signals(host: Host, rootfs: Path, sig: int) -> None:
    script = f"trap 'echo got; exit {sig}' {sig}; echo ready; while true; do sleep 0.05; done"
    run = host.popen("run", "--rm", str(rootfs), "--", "sh", "-c", script)
    assert run.stdout is not None
    assert run.stdout.readline() == "ready\n"
    run.send_signal(sig)
    assert run.wait(TIMEOUT) == sig
    assert run.stdout.read() == "got\n"


def test_rm_removes_cgroup_and_state_after_exit(host: Host, rootfs: Path) -> None:
    with nothing_left(host):
        out = host.corral("run", "--rm", str(rootfs), "--", "sh", "-c", "echo bye; exit 5")
    assert (out.returncode, out.stdout) == (5, "bye\n")


def test_the_shim_is_small(host: Host, rootfs: Path) -> None:
    """Issue 4's target: the shim's peak RSS (VmHWM) under 12 MB while a container runs."""
    out = host.corral("run", "-d", "--name", "small", str(rootfs), "--", "sleep", host.marker)
    assert out.returncode == 0, out.stderr
    status = Path(f"/proc/{host.inspect('small')['shim_pid']}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    hwm_kb = int(found[1])
    print(f"shim VmHWM {hwm_kb} kB")
    assert hwm_kb < 12 * 1024
    assert host.corral("kill", "small").returncode == 0


# -- the pieces, without a container -----------------------------------------------------------


CHUNKS = [
    b"plain\n",
    b"two\nlines\npartial",
    b" end\n",
    "caf\u00e9 \u2603\n".encode()[:4],  # a UTF-8 sequence cut between two reads
    "caf\u00e9 \u2603\n".encode()[4:],
    b"bad \xff byte\n",
    b"x" * (MAX_LINE * 2 + 5) + b"\n",
    b"no newline at the end",
]


def test_the_shims_log_is_what_logs_logwriter_writes(tmp_path: Path) -> None:
    ours, theirs = JsonLog(str(tmp_path / "shim.jsonl")), LogWriter(tmp_path / "writer.jsonl")
    for i, chunk in enumerate(CHUNKS):
        stream = ("stdout", "stderr")[i % 2]
        ours.write(stream, chunk)
        theirs.write(stream, chunk)
    ours.flush()
    theirs.close()
    read = [list(LogReader(tmp_path / f).entries()) for f in ("shim.jsonl", "writer.jsonl")]
    assert [(e.stream, e.log) for e in read[0]] == [(e.stream, e.log) for e in read[1]]
    assert len(read[0]) >= len(CHUNKS) and all(e.time.endswith("Z") for e in read[0])


@pytest.mark.parametrize(
    ("text", "number"), [("KILL", 9), ("SIGTERM", 15), ("usr1", 10), ("15", 15), ("SIGRTMIN", 34)]
)
def test_signals_by_name_or_number(text: str, number: int) -> None:
    assert lifecycle.parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "0", "99", "-1", ""])
def test_unknown_signals_are_refused(text: str) -> None:
    with pytest.raises(lifecycle.ContainerError, match="signal"):
        lifecycle.parse_signal(text)


def test_exit_codes_follow_the_shell() -> None:
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(1)
    assert exit_status(os.waitpid(pid, 0)[1]) == 128 + signal.SIGTERM
    pid = os.fork()
    if pid == 0:
        os._exit(42)
    assert exit_status(os.waitpid(pid, 0)[1]) == 42


def test_process_config_survives_json(rootfs: Path) -> None:
    spec = build_spec(
        rootfs=str(rootfs), command=["sh", "-c", "true"], env=["A=1"], volume=[f"{rootfs}:/r:ro"],
        time_offset="boottime=2.5", userns="auto", user="7:8",
    )  # fmt: skip
    config = lifecycle.process_config(spec, "/sys/fs/cgroup/x")
    assert ProcessConfig.from_json(config.to_json()) == config
    assert config.time_offsets == "boottime 2 500000000\n" and config.idmap_rootfs
    assert (config.uid, config.gid, config.volumes) == (7, 8, ((str(rootfs), "/r", True),))
    assert "CAP_MKNOD" not in config.caps and "CAP_CHOWN" in config.caps


def test_exec_environment_extends_the_containers() -> None:
    env = environment_of(("PATH=/bin", "A=1"), ("A=2", "B=3", "HOME"), "box", 0)
    assert env == {
        "PATH": "/bin",
        "A": "2",
        "B": "3",
        "HOSTNAME": "box",
        "HOME": os.environ["HOME"],
    }


def test_userns_auto_with_an_unreachable_rootfs_says_what_to_do(host: Host, tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    build_busybox(str(hidden / "rootfs"))
    with nothing_left(host):
        out = host.corral("run", "--userns", "auto", str(hidden / "rootfs"), "--", "true")
    assert out.returncode == 125
    assert "cannot reach" in out.stderr and "chmod o+x" in out.stderr
