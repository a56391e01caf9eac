"""Rendering once per snapshot and format, and scrapes racing the poller's swaps."""

from __future__ import annotations

import dataclasses
import gzip
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text
from test_exporter_support import fixture_fs, get, read_host, serving

from monitor.exporter import Exporter, render
from monitor.exporter.render import ExportView, Format, Rendered
from monitor.sample import HostSample
from monitor.snapshot import Snapshot, build_snapshot
from runtime.cgroupfs.cpu import CpuStat

BASE_TIME = 1_800_000_000.0
SCRAPERS = 8
HAMMER_SECONDS = 2.0


def numbered(base: HostSample, n: int) -> Snapshot:
    """Snapshot n: its seq, its timestamp and capture/web's CPU seconds all say n, so a
    scrape that mixed two snapshots would show figures that disagree."""
    web = base.cgroups["capture/web"]
    cgroups = dict(base.cgroups)
    cgroups["capture/web"] = dataclasses.replace(web, cpu=CpuStat(n * 1_000_000, 0, 0))
    sample = dataclasses.replace(base, wall_time=BASE_TIME + n, cgroups=cgroups)
    return build_snapshot(None, sample, seq=n, names={}, collect_seconds=0.001)


def figures(text: str) -> tuple[float, float, float]:
    found: dict[str, float] = {}
    for family in parse_text(text):
        for s in family.samples:
            if s.name in ("corral_polls_total", "corral_last_collect_timestamp_seconds") or (
                s.name == "corral_cpu_usage_seconds_total" and s.labels["cgroup"] == "capture/web"
            ):
                found[s.name] = s.value
    return (
        found["corral_polls_total"],
        found["corral_last_collect_timestamp_seconds"] - BASE_TIME,
        found["corral_cpu_usage_seconds_total"],
    )


def test_each_format_is_rendered_once_and_served_as_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Format] = []
    real = render.write
    monkeypatch.setattr(
        render, "write", lambda view, fmt, lines=None: calls.append(fmt) or real(view, fmt, lines)
    )
    rendered = Rendered(ExportView(numbered(read_host(fixture_fs(tmp_path)), 1), {}, 1.0))
    bodies: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: bodies.append(rendered.body(Format.TEXT)))
        for _ in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [Format.TEXT]
    assert all(b is bodies[0] for b in bodies)
    assert rendered.body(Format.TEXT, True) is rendered.body(Format.TEXT, True)
    assert gzip.decompress(rendered.body(Format.TEXT, True)) == bodies[0]
    rendered.body(Format.OPENMETRICS, True)
    rendered.body(Format.OPENMETRICS)
    assert calls == [Format.TEXT, Format.OPENMETRICS]


def test_concurrent_scrapes_during_swaps_see_whole_snapshots(tmp_path: Path) -> None:
    base = read_host(fixture_fs(tmp_path))
    snapshots = [numbered(base, n) for n in range(1, 201)]
    exporter = Exporter(1.0)
    exporter.publish(snapshots[0])
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def publish() -> None:
        for snap in snapshots[1:]:
            if stop.is_set():
                return
            exporter.publish(snap)
            time.sleep(0.005)

    def scrape(url: str, i: int) -> None:
        headers = [{}, {"Accept-Encoding": "gzip"}][i % 2]
        while not stop.is_set():
            reply = get(url, headers=headers)
            body = gzip.decompress(reply.body) if headers else reply.body
            seq, stamp, cpu = figures(body.decode())
            if not seq == stamp == cpu:
                problems.append(f"mixed snapshot: seq {seq}, time {stamp}, cpu {cpu}")
            seen.append(int(seq))

    with serving(exporter) as server:
        threads = [threading.Thread(target=scrape, args=(server.url, i)) for i in range(SCRAPERS)]
        threads.append(threading.Thread(target=publish))
        for t in threads:
            t.start()
        time.sleep(HAMMER_SECONDS)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert not problems, problems[:5]
    assert len(set(seen)) > 20, f"only {len(set(seen))} snapshots seen: swaps did not race"
    assert len(seen) > 100, len(seen)


def test_vanished_cgroups_are_counted_apart_from_errors(tmp_path: Path) -> None:
    snap = numbered(read_host(fixture_fs(tmp_path)), 1)
    view = ExportView(snap, {"gone": 3, "parse": 1}, 1.0)
    text = render.render(render.families(view), Format.TEXT).decode()
    assert "corral_cgroups_vanished_total 3.0" in text
    assert 'corral_collect_errors_total{kind="parse"} 1.0' in text
    assert 'kind="gone"' not in text
