"""The exporter's HTTP server, for real on loopback: content negotiation, gzip, HEAD,
/healthz in each state, the landing page, and the Accept/Accept-Encoding/--listen parsing."""

from __future__ import annotations

import gzip
import http.client
import logging
import statistics
import time
from pathlib import Path

import pytest
from test_exporter_support import fixture_fs, get, serving, snapshot_of

from monitor.exporter import Exporter
from monitor.exporter.render import Format
from monitor.exporter.server import negotiate, parse_listen, wants_gzip

# What Prometheus 2.42 sends (scrape/scrape.go acceptHeader).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (PROMETHEUS_ACCEPT, Format.OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0", Format.OPENMETRICS),
        ("text/plain;version=0.0.4", Format.TEXT),
        ("application/openmetrics-text;q=0.1,text/plain;q=0.5", Format.TEXT),
        ("application/openmetrics-text;q=0", Format.TEXT),
        ("application/openmetrics-text;q=oops", Format.TEXT),
        ("*/*", Format.TEXT),
        ("", Format.TEXT),
        (None, Format.TEXT),
    ],
)
def test_negotiate(accept: str | None, fmt: Format) -> None:
    assert negotiate(accept) is fmt


@pytest.mark.parametrize(
    ("encoding", "gz"),
    [
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("", False),
        (None, False),
    ],
)
def test_wants_gzip(encoding: str | None, gz: bool) -> None:
    assert wants_gzip(encoding) is gz


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9847") == ("127.0.0.1", 9847)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    for bad in ("localhost", "1.2.3.4:http", "1.2.3.4:70000", "1.2.3.4:"):
        with pytest.raises(ValueError) as err:
            parse_listen(bad)
        assert str(err.value) == f"--listen {bad!r}: expected HOST:PORT like 127.0.0.1:9847"


def test_metrics_negotiates_format_and_gzip(tmp_path: Path) -> None:
    exporter = Exporter(1.0)
    rendered = exporter.publish(snapshot_of(fixture_fs(tmp_path)))
    with serving(exporter) as server:
        text = get(server.url)
        om = get(server.url, headers={"Accept": PROMETHEUS_ACCEPT})
        om_gz = get(server.url, headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        head = get(server.url, method="HEAD", headers={"Accept-Encoding": "gzip"})
    assert (text.status, text.headers["content-type"]) == (200, TEXT_TYPE)
    assert text.body == rendered.body(Format.TEXT)
    assert "content-encoding" not in text.headers
    assert (om.status, om.headers["content-type"]) == (200, OM_TYPE)
    assert om.body.endswith(b"# EOF\n") and om.body == rendered.body(Format.OPENMETRICS)
    assert om_gz.headers["content-encoding"] == "gzip"
    assert gzip.decompress(om_gz.body) == om.body
    assert len(om_gz.body) < len(om.body) / 4
    assert om_gz.headers["vary"] == "Accept, Accept-Encoding"
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(rendered.body(Format.TEXT, True))


def test_before_the_first_snapshot_metrics_and_healthz_say_so(tmp_path: Path) -> None:
    exporter = Exporter(1.0)
    with serving(exporter) as server:
        metrics = get(server.url)
        health = get(server.url, "/healthz")
        exporter.poll_failed("poll", "CgroupError: /sys/fs/cgroup: Permission denied")
        failed = get(server.url, "/healthz")
    assert metrics.status == 503 and b"no snapshot yet" in metrics.body
    assert health.status == 503
    assert health.body == b"no snapshot yet: the first poll has not finished\n"
    assert failed.body.endswith(
        b"; last poll failed: CgroupError: /sys/fs/cgroup: Permission denied\n"
    )


def test_healthz_goes_stale_after_three_intervals(tmp_path: Path) -> None:
    clock = Clock()
    exporter = Exporter(2.0, clock=clock)
    exporter.publish(snapshot_of(fixture_fs(tmp_path)))
    with serving(exporter) as server:
        clock.now += 5.9
        fresh = get(server.url, "/healthz")
        clock.now += 0.2
        stale = get(server.url, "/healthz")
        scrape = get(server.url)
    assert (fresh.status, fresh.body) == (200, b"ok: newest snapshot is 5.9s old\n")
    assert (stale.status, stale.body) == (503, b"stale: newest snapshot is 6.1s old (limit 6s)\n")
    assert scrape.status == 200  # stale data is still served, dated by its timestamp metric


def test_landing_page_and_unknown_paths(tmp_path: Path) -> None:
    exporter = Exporter(1.0)
    exporter.publish(snapshot_of(fixture_fs(tmp_path)))
    with serving(exporter) as server:
        page = get(server.url, "/")
        missing = get(server.url, "/api/snapshot.json")
        query = get(server.url, "/metrics?name[]=x")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    assert '<a href="/metrics">/metrics</a>: 9 cgroups' in html
    assert '<a href="/healthz">/healthz</a>: ok: newest snapshot is' in html
    assert missing.status == 404
    assert query.status == 200 and query.body.startswith(b"# HELP corral_cpu_usage_seconds_total")


def test_kept_alive_scrapes_are_not_held_back_by_nagle(tmp_path: Path) -> None:
    """Headers and body are two writes: with Nagle's algorithm on, each scrape on a kept-alive
    connection (as Prometheus makes them) waited ~40 ms for the client's delayed ACK."""
    exporter = Exporter(1.0)
    exporter.publish(snapshot_of(fixture_fs(tmp_path)))
    with serving(exporter) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        times = []
        for _ in range(40):
            began = time.perf_counter()
            conn.request("GET", "/metrics")
            assert conn.getresponse().read().startswith(b"# HELP")
            times.append(time.perf_counter() - began)
        conn.close()
    assert statistics.median(times) < 0.01, f"median {statistics.median(times) * 1e3:.1f} ms"


def test_a_failed_request_is_one_log_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # socketserver's own handle_error prints a traceback to stderr, a dozen journal entries
    # for a client that merely reset its connection mid-answer.
    exporter = Exporter(1.0)
    with serving(exporter) as server, caplog.at_level(logging.DEBUG, "corral.exporter"):
        for error in (ConnectionResetError(104, "Connection reset by peer"), KeyError("x")):
            try:
                raise error
            except Exception:
                server._server.handle_error(None, ("127.0.0.1", 40000))
        records = [r for r in caplog.records if r.name == "corral.exporter"]
        assert get(server.url, "/healthz").status == 503  # still serving (no poll yet)
    assert "Traceback" not in capsys.readouterr().err
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "client 127.0.0.1: [Errno 104] Connection reset by peer"),
        (logging.WARNING, "request from 127.0.0.1 failed: KeyError: 'x'"),
    ]
