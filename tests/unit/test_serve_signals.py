"""`corral serve` as a service on this host: SIGHUP swaps in a valid policy and keeps the
running one when the new one is broken, turns enforcement on and off, leaves keys that need
a restart alone; SIGTERM stops it with no process left; --record writes polls that replay;
a client that sends nothing or reads nothing and cgroups removed mid-poll do not stop it.
And EnforcementLoop.replace_policy on a captured tree (state kept for unchanged rules)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.agent.config import RecordSection
from corral.agent.recording import AgentRecorder
from enforce.audit import AuditLog
from enforce.loop import EnforcementLoop
from enforce.policy import load_policy
from monitor.collector import Collector, CollectorConfig
from monitor.recording.replay import replay
from runtime.cgroupfs import CgroupFS

REPO = Path(__file__).resolve().parents[2]
CORRAL = str(REPO / ".venv" / "bin" / "corral")

POLICY = """\
[enforcer]
managed_root = "{root}"
tick_seconds = "{tick}"
audit_log = ""

[[rule]]
name = "{name}"
mode = "dry-run"
select = {{ cgroup = "{root}/*" }}
limits.pids_max = 100
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(check: Callable[[], object], what: str, seconds: float = 20.0) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Agent:
    """`corral serve --config FILE` in a subprocess, its log in a file."""

    def __init__(
        self, tmp_path: Path, config: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.config = tmp_path / "corral.toml"
        self.write_config(config)
        self.log = tmp_path / "serve.log"
        with self.log.open("wb") as out:
            argv = [CORRAL, "serve", "--config", str(self.config), *args]
            environ = {**os.environ, **(env or {})}
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, env=environ)
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_log(r"listening on http://")

    def write_config(self, body: str) -> None:
        self.config.write_text(f'listen = "127.0.0.1:{self.port}"\ncgroup_leaf = ""\n' + body)

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, pattern: str, count: int = 1) -> None:
        def found() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"corral serve exited {self.proc.returncode}:\n{self.text()}")
            return len(re.findall(pattern, self.text())) >= count

        try:
            until(found, f"{pattern!r} in the log")
        except AssertionError:
            raise AssertionError(f"no {pattern!r} in:\n{self.text()}") from None

    def get(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return str(resp.read().decode())

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def children(self) -> list[int]:
        """Processes whose parent is the agent (field 4 of /proc/PID/stat)."""
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            if int(stat.rpartition(")")[2].split()[1]) == self.proc.pid:
                found.append(int(entry.name))
        return found

    def terminate(self) -> None:
        """SIGTERM: exit status 0 within the timeout, no process left behind."""
        assert self.children() == []  # the agent forks nothing
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=10) == 0, self.text()
        assert not Path(f"/proc/{self.proc.pid}").exists()
        assert self.text().splitlines()[-2:] == [
            "info: corral.serve: stopping on SIGTERM",
            "info: corral.serve: stopped",
        ]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.kill()


def help_interval(agent: Agent) -> str:
    found = re.search(r"polled every ([\d.]+)s", agent.get("/metrics"))
    return found[1] if found else ""


def test_sighup_swaps_in_a_valid_policy_and_keeps_the_old_one_when_broken(
    tmp_path: Path, host: tuple[CgroupFS, str], agents: list[Agent]
) -> None:
    fs, root = host
    fs.create(f"{root}/web")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(root=root, tick="200ms", name="first"))
    agent = Agent(tmp_path, f'[collector]\nsubtree = "{root}"\n[enforcer]\npolicy = "{policy}"\n')
    agents.append(agent)
    until(lambda: help_interval(agent) == "0.2", "the first policy's tick in /metrics")

    policy.write_text(POLICY.format(root=root, tick="300ms", name="second"))
    agent.hup()
    agent.wait_log(rf"policy {policy} swapped in: state kept for no rule; started afresh: second")
    until(lambda: help_interval(agent) == "0.3", "the second policy's tick in /metrics")

    policy.write_text(POLICY.format(root=root, tick="soon", name="third"))
    agent.hup()
    agent.wait_log(r"reload refused")
    line = agent.text().splitlines()[-1]
    assert line == (
        "error: corral.serve: reload refused, the running configuration stays: "
        f"{policy}:3: enforcer.tick_seconds: bad value 'soon': allowed: a duration like 6s, "
        "10ms, 2m, 1h or a number of seconds"
    )
    assert help_interval(agent) == "0.3"  # the second policy still runs, and is served
    assert agent.get("/healthz").startswith("ok")
    agent.terminate()


def test_sighup_turns_enforcement_on_and_off_and_leaves_restart_keys(
    tmp_path: Path, host: tuple[CgroupFS, str], agents: list[Agent]
) -> None:
    root = host[1]
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(root=root, tick="200ms", name="rule"))
    collector = f'interval = "200ms"\n[collector]\nsubtree = "{root}"\n'
    agent = Agent(tmp_path, collector)
    agents.append(agent)
    assert (
        agent.text()
        .rstrip()
        .endswith("every 0.2s; enforcement off; configuration " + str(agent.config))
    )
    assert "corral_enforcer_" not in agent.get("/metrics")

    agent.write_config(collector + f'[enforcer]\npolicy = "{policy}"\n')
    agent.hup()
    agent.wait_log(rf"reloaded {agent.config}: enforcing {policy}, audit to memory only")
    until(lambda: "corral_enforcer_last_decision" in agent.get("/metrics"), "enforcer metrics")

    agent.write_config(collector + f'[enforcer]\npolicy = "{policy}"\nenabled = false\n')
    agent.hup()
    agent.wait_log(r"the enforcer stopped \(its on_exit applied; its state is reset\)")
    agent.wait_log(r"enforcement off \(enforcer.enabled = false")
    until(lambda: "corral_enforcer_" not in agent.get("/metrics"), "no enforcer metrics")

    other = free_port()
    agent.config.write_text(
        f'listen = "127.0.0.1:{other}"\ncgroup_leaf = "x"\ninterval = "200ms"\n'
        f'[collector]\nsubtree = "{root}"\nmax_depth = 0\n'
    )
    agent.hup()
    agent.wait_log(r"listen changed: needs a restart; the running value stays")
    agent.wait_log(r"cgroup_leaf changed: needs a restart")
    agent.wait_log(r"collector.max_depth changed: needs a restart")
    assert agent.get("/healthz").startswith("ok")  # still on the old port
    agent.terminate()


def test_systemd_hears_ready_reloading_and_stopping_on_notify_socket(
    tmp_path: Path, agents: list[Agent]
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(20)
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        agent = Agent(tmp_path, 'interval = "200ms"\n[collector]\nmax_depth = 0\n', env=env)
        agents.append(agent)
        assert notify.recv(4096) == b"READY=1"
        agent.hup()
        reloading = notify.recv(4096).decode()
        assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading), reloading
        assert notify.recv(4096) == b"READY=1"
        agent.terminate()
        assert notify.recv(4096) == b"STOPPING=1"


def test_record_writes_the_polls_that_replay_and_rotates_an_old_file_away(
    tmp_path: Path, host: tuple[CgroupFS, str], agents: list[Agent]
) -> None:
    fs, root = host
    fs.create(f"{root}/a")
    record = tmp_path / "agent.rec"
    record.write_bytes(b"an earlier run's recording")
    agent = Agent(
        tmp_path, f'interval = "100ms"\n[collector]\nsubtree = "{root}"\n', "--record", str(record)
    )
    agents.append(agent)
    assert f"recording to {record}," in agent.text()
    until(lambda: "corral_cgroups 2.0" in agent.get("/metrics"), "both cgroups exported")
    until(lambda: record.stat().st_size > 2000, "frames in the recording")
    agent.terminate()
    assert (tmp_path / "agent.rec.1").read_bytes() == b"an earlier run's recording"
    snapshots = list(replay(record))
    assert len(snapshots) >= 3
    assert set(snapshots[-1].sample.cgroups) == {root, f"{root}/a"}
    walls = [s.sample.wall_time for s in snapshots]
    assert walls == sorted(walls)


def test_clients_that_send_or_read_nothing_do_not_stop_other_scrapes(
    tmp_path: Path, agents: list[Agent]
) -> None:
    agent = Agent(tmp_path, 'interval = "200ms"\n[collector]\nmax_depth = 1\n')
    agents.append(agent)
    silent = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(20)]
    partial = socket.create_connection(("127.0.0.1", agent.port))
    partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    readers = []
    for _ in range(5):  # ask for /metrics again and again, never read the answers
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", agent.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        readers.append(s)
    for _ in range(10):  # a scrape that the idle clients blocked would time out
        assert "corral_cgroups" in agent.get("/metrics", timeout=5)
    # Stopped while they are still connected: stop does not wait for them either. (Closed
    # first, the readers' unread answers would reset their connections.)
    agent.terminate()
    for s in [*silent, partial, *readers]:
        s.close()


def test_cgroups_removed_while_polled_do_not_stop_the_agent(
    tmp_path: Path, host: tuple[CgroupFS, str], agents: list[Agent]
) -> None:
    fs, root = host
    agent = Agent(tmp_path, f'interval = "100ms"\n[collector]\nsubtree = "{root}"\n')
    agents.append(agent)
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            for i in range(20):
                fs.create(f"{root}/c{n}-{i}")
            for i in range(20):
                fs.remove(f"{root}/c{n}-{i}")
            n += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        seen = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            found = re.search(r"corral_cgroups (\d+)", agent.get("/metrics"))
            assert found is not None
            seen.add(int(float(found[1])))
    finally:
        stop.set()
        worker.join()
    assert len(seen) > 1, seen  # polls saw the cgroups come and go
    until(lambda: "corral_cgroups 1.0" in agent.get("/metrics"), "only the parent left")
    assert agent.get("/healthz").startswith("ok")
    assert "poll failed" not in agent.text() and "error" not in agent.text()
    agent.terminate()


def test_replace_policy_keeps_the_state_of_unchanged_rules(
    captured_fs: CgroupFS, tmp_path: Path
) -> None:
    body = """
[enforcer]
managed_root = "capture"
[[rule]]
name = "web"
select = {{ cgroup = "capture/web" }}
limits.pids_max = 1000
[[rule]]
name = "batch"
select = {{ cgroup = "capture/batch" }}
limits.pids_max = {batch}
"""
    paths = [tmp_path / "a.toml", tmp_path / "b.toml"]
    for path, batch in zip(paths, (2000, 3000), strict=True):
        path.write_text(body.format(batch=batch))
    collector = Collector(captured_fs, CollectorConfig(watch=False))
    loop = EnforcementLoop(
        load_policy(paths[0]), captured_fs, audit=AuditLog(None), collector=collector, own="x"
    )
    try:
        loop.run_once()
        web = loop.engine.state("web", "limits", "capture/web")
        assert web is not None and loop.engine.state("batch", "limits", "capture/batch")
        assert loop.replace_policy(load_policy(paths[1])) == ("web",)
        assert loop.engine.state("web", "limits", "capture/web") is web
        assert loop.engine.state("batch", "limits", "capture/batch") is None
        assert loop.engine.originals()[("capture/web", "pids.max")] is not None
        entries = loop.run_once()
        assert [(e.rule, e.new) for e in entries if e.file == "pids.max"] == [("batch", "3000")]
        pids = (captured_fs.root / "capture/batch/pids.max").read_text().strip()
        assert pids == "3000"
    finally:
        loop.close()
        collector.close()
    assert os.path.exists(captured_fs.root / "capture/web/pids.max")


def test_the_recording_rotates_past_max_bytes_keeping_keep_files(
    tmp_path: Path, host: tuple[CgroupFS, str]
) -> None:
    fs, root = host
    for i in range(5):
        fs.create(f"{root}/c{i}")
    path = tmp_path / "agent.rec"
    section = RecordSection.model_validate({"path": str(path), "max_bytes": "4K", "keep": 2})
    collector = Collector(fs, CollectorConfig(subtree=root))
    recorder = AgentRecorder(section, {"cgroup_root": str(fs.root)})

    def rotated() -> bool:
        for _ in range(50):
            recorder.write(collector.poll())
        return recorder.rotations >= 3

    try:
        until(rotated, "3 rotations")
    finally:
        recorder.close()
        collector.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.rec", "agent.rec.1", "agent.rec.2"]
    for name in ("agent.rec.1", "agent.rec.2"):
        assert (tmp_path / name).stat().st_size >= 4096
        frames = list(replay(tmp_path / name))  # each file replays on its own
        assert len(frames) > 1 and len(frames[-1].sample.cgroups) == 6
