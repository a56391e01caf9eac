"""monitor.agent.Agent driving the real Collector over a copy of the captured tree: it
publishes before the server listens, keeps polling on its interval, counts poll errors into
corral_collect_errors_total across polls, survives a failing poll and stops cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_exporter_support import fixture_fs

from monitor.agent import Agent
from monitor.collector import Collector, CollectorConfig
from monitor.exporter import Exporter
from monitor.exporter.render import Format


def errors_line(exporter: Exporter, kind: str) -> str:
    current = exporter.current
    assert current is not None
    body = current.body(Format.TEXT).decode()
    return next(line for line in body.splitlines() if f'_errors_total{{kind="{kind}"}}' in line)


def test_agent_publishes_at_start_polls_on_its_interval_and_stops(tmp_path: Path) -> None:
    collector = Collector(fixture_fs(tmp_path), CollectorConfig())
    exporter = Exporter(0.1)
    agent = Agent(collector, exporter, 0.1)
    agent.start()
    try:
        first = exporter.current
        assert first is not None and first.view.snapshot.seq == 1
        assert len(first.view.snapshot.sample.cgroups) == 9
        time.sleep(0.55)
        current = exporter.current
        assert current is not None and 4 <= current.view.snapshot.seq <= 7
        assert agent.running and exporter.health().ok
        assert collector.open_fds > 0
    finally:
        began = time.monotonic()
        agent.stop()
    assert time.monotonic() - began < 1.0
    assert not agent.running
    assert collector.open_fds == 0  # the agent closed the collector it owned


def test_collector_errors_accumulate_across_polls(tmp_path: Path) -> None:
    fs = fixture_fs(tmp_path)
    (fs.root / "capture" / "web" / "cpu.stat").write_text("usage_usec lots\n")
    collector = Collector(fs, CollectorConfig(subtree="capture/web"))
    exporter = Exporter(1.0)
    agent = Agent(collector, exporter, 1.0)
    for polls in (1, 2, 3):
        agent.poll_once()
        assert (
            errors_line(exporter, "parse")
            == f'corral_collect_errors_total{{kind="parse"}} {polls}.0'
        )
    collector.close()


def test_a_failing_poll_is_counted_logged_and_shown_by_healthz(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector = Collector(fixture_fs(tmp_path), CollectorConfig())
    exporter = Exporter(1.0)
    agent = Agent(collector, exporter, 1.0)
    assert agent.poll_once() is not None
    collector.close()  # polling a closed collector raises: the agent must carry on
    assert agent.poll_once() is None
    assert agent.poll_once() is None
    health = exporter.health()
    assert health.ok  # the previous snapshot is still fresh
    assert health.reason.endswith("s old")
    assert "poll failed: RuntimeError: this Collector is closed" in caplog.text
    exporter.publish(exporter.current.view.snapshot)  # type: ignore[union-attr]
    assert errors_line(exporter, "poll") == 'corral_collect_errors_total{kind="poll"} 2.0'


def test_a_stale_exporter_reports_the_last_poll_failure() -> None:
    exporter = Exporter(1.0)
    exporter.poll_failed("poll", "RuntimeError: boom")
    health = exporter.health()
    assert not health.ok
    assert health.reason == (
        "no snapshot yet: the first poll has not finished; last poll failed: RuntimeError: boom"
    )


def test_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"interval 0: expected seconds > 0"):
        Agent(Collector(fixture_fs(tmp_path)), Exporter(1.0), 0)
    with pytest.raises(ValueError, match=r"interval -1: expected seconds > 0"):
        Exporter(-1)
