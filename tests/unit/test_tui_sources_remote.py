"""RemoteSource against a real agent on loopback: the monitor's Agent polling a recording
(captured from the real kernel) into an Exporter and a History, served by MetricsServer with
the JSON API. The agent stops and comes back; it restarts; it needs a password; it hangs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from dashboards.tui.sources.base import CannotSeek, Frame, SourceDisconnected
from dashboards.tui.sources.remote import RemoteSource
from enforce.actions import AuditEntry, Mode, Outcome
from enforce.audit import to_json
from monitor.agent import Agent
from monitor.exporter import Exporter
from monitor.exporter.api import ApiProvider
from monitor.exporter.server import MetricsServer
from monitor.exporter.webconfig import WebConfig, load_web_config
from monitor.history import History
from monitor.recording import Recording
from monitor.snapshot import Snapshot

ROOT = Path(__file__).resolve().parent.parent.parent
RECORDING = ROOT / "tests" / "fixtures" / "recordings" / "demo.corral"
POLL = 0.05


class Looping:
    """The agent's poller: the recording's frames in turn, over and over (seq counting on),
    each kept in the History as `corral serve` keeps its polls."""

    def __init__(self, history: History) -> None:
        self.recording = Recording(RECORDING)
        self.history = history
        self.polls = 0

    def poll(self) -> Snapshot:
        snapshot = self.recording.snapshot(self.polls % len(self.recording))
        self.polls += 1
        snapshot = dataclasses.replace(snapshot, seq=self.polls)
        self.history.append(snapshot)
        return snapshot

    def close(self) -> None:
        self.recording.close()


class Audit:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def add(self, when: float, cgroup: str = "demo.slice/batch.service") -> AuditEntry:
        entry = AuditEntry(
            when, "squeeze", "memory_pressure", cgroup, "memory.high", "50331648",
            "48000000", Mode.ENFORCE, Outcome.APPLIED, "some avg10 99.4 > 10", {"psi": 99.4},
        )  # fmt: skip
        self.entries.append(entry)
        return entry

    def __call__(self, after: float) -> list[dict[str, Any]]:
        return [json.loads(to_json(e)) for e in self.entries if e.time > after]


@contextlib.contextmanager
def serving(web: WebConfig | None = None, port: int = 0) -> Iterator[tuple[MetricsServer, Audit]]:
    """An agent (poller thread, exporter, History, audit) and its server, in this process."""
    history, audit, exporter = History(), Audit(), Exporter(POLL)
    agent = Agent(Looping(history), exporter, POLL)
    agent.start()
    server = MetricsServer(exporter, "127.0.0.1", port, web, ApiProvider(history, audit))
    server.start()
    try:
        yield server, audit
    finally:
        server.stop()
        agent.stop()


# The agent as its own process, so that stopping it is what the dashboard meets when an agent
# dies: the listener and every kept-alive connection gone at once.
AGENT = """
import sys, time
from test_tui_sources_remote import serving
with serving(port=int(sys.argv[1])) as (server, _):
    print(server.port, flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def agent_process(port: int = 0) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'unit'}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(port)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(10)


def until(source: RemoteSource, ok: Any, seconds: float = 10.0) -> Frame:
    """Frames until ``ok(frame)``; SourceDisconnected counts as not yet."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            frame = source.next_frame()
            if ok(frame):
                return frame
        except SourceDisconnected:
            pass
        assert time.monotonic() < deadline, "the condition never held"


def test_first_frame_fills_the_history_with_the_agents_own_figures() -> None:
    with serving() as (server, _), Recording(RECORDING) as rec:
        time.sleep(10 * POLL)
        source = RemoteSource(server.url, interval=POLL)
        try:
            frame = source.next_frame()
            later = until(source, lambda f: f.snapshot.seq >= frame.snapshot.seq + 3)
        finally:
            source.close()
        seqs = [s.seq for s in later.history]
        assert seqs == list(range(1, later.snapshot.seq + 1))  # every poll, none twice
        assert len(frame.history) >= 5 and frame.history[-1] is frame.snapshot
        for snap in later.history:
            want = rec.snapshot((snap.seq - 1) % len(rec))  # the agent's seq n is frame n-1
            assert snap.sample == want.sample and snap.names == want.names
            assert dict(snap.models) == dict(want.models)
    assert (source.label, source.seekable, source.processes("demo.slice")) == (
        server.url, False, None
    )  # fmt: skip
    with pytest.raises(CannotSeek):
        source.seek(-1)


def test_audit_entries_arrive_once_each() -> None:
    with serving() as (server, audit):
        first = audit.add(1795911900.25)
        source = RemoteSource(server.url, interval=POLL)
        try:
            assert source.next_frame().audit == (first,)
            second = audit.add(1795911901.5, "demo.slice/web.service")
            assert source.next_frame().audit == (first, second)
            assert source.next_frame().audit == (first, second)
        finally:
            source.close()


def test_the_agent_dies_and_comes_back() -> None:
    with agent_process() as (proc, port):
        url = f"http://127.0.0.1:{port}"
        source = RemoteSource(url, interval=POLL, timeout=1.0)
        until(source, lambda f: f.snapshot.seq >= 30)
        proc.kill()
        proc.wait(10)
    try:
        reasons = []
        began = time.monotonic()
        for _ in range(4):
            with pytest.raises(SourceDisconnected) as caught:
                source.next_frame()
            reasons.append(str(caught.value))
        assert time.monotonic() - began < 4 * POLL + 2.0  # each call waits at most ~interval
        assert reasons[0] in (
            f"{url}: connection refused (is `corral serve` running there?)",
            f"{url}: the agent closed the connection",  # the kept-alive connection's end
        ), reasons
        assert any("; retrying in" in r for r in reasons[1:]), reasons  # backing off
        with agent_process(port):  # a new agent on the same port: its seqs start at 1
            frame = until(source, lambda f: f.snapshot.seq < 30)
    finally:
        source.close()
    assert [s.seq for s in frame.history] == list(range(1, frame.snapshot.seq + 1))


def test_basic_auth_from_the_url() -> None:
    users = {"dash": bcrypt.hashpw(b"p@ss word", bcrypt.gensalt(4))}
    with serving(WebConfig(Path("web.yml"), users=users)) as (server, _):
        port = server.port
        good = RemoteSource(f"http://dash:p%40ss%20word@127.0.0.1:{port}", interval=POLL)
        bad = RemoteSource(f"http://dash:nope@127.0.0.1:{port}", interval=POLL)
        try:
            assert good.next_frame().snapshot.seq >= 1
            assert good.label == server.url  # no password in the header line
            with pytest.raises(SourceDisconnected) as caught:
                bad.next_frame()
        finally:
            good.close()
            bad.close()
    assert str(caught.value) == (
        f"{server.url}: HTTP 401 for /api/v1/history?after=0: "
        "check the user and password in the URL"
    )


def test_an_agent_that_accepts_but_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes the handshake; nobody reads
        port = listener.getsockname()[1]
        source = RemoteSource(f"http://127.0.0.1:{port}", interval=POLL, timeout=0.2)
        began = time.monotonic()
        with pytest.raises(SourceDisconnected, match=r": no answer within 0\.2s$"):
            source.next_frame()
        assert time.monotonic() - began < 1.0
        source.close()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("127.0.0.1:9847", "expected http://HOST:PORT"),
        ("ftp://host:1", "expected http://HOST:PORT"),
        ("http://host:99999", "the port is not a number"),
    ],
)
def test_bad_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RemoteSource(url)


def test_no_port_means_corrals_default_port() -> None:
    assert RemoteSource("http://example.invalid").label == "http://example.invalid:9847"


def test_https_with_the_agents_certificate(tmp_path: Path) -> None:
    san = "subjectAltName=IP:127.0.0.1"
    openssl = "openssl req -x509 -days 2 -keyout key.pem -out cert.pem -subj /CN=localhost"
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    subprocess.run(
        [*openssl.split(), "-addext", san, *ec.split()],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
    )
    with serving(load_web_config(tmp_path / "web.yml")) as (server, _):
        trusting = ssl.create_default_context(cafile=tmp_path / "cert.pem")
        source = RemoteSource(server.url, interval=POLL, context=trusting)
        stranger = RemoteSource(server.url, interval=POLL)  # the system's CAs only
        try:
            assert source.next_frame().snapshot.seq >= 1
            assert source.label.startswith("https://127.0.0.1:")
            with pytest.raises(SourceDisconnected, match="TLS: CERTIFICATE_VERIFY_FAILED"):
                stranger.next_frame()
        finally:
            source.close()
            stranger.close()
