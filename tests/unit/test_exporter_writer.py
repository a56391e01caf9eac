"""The exposition writer makes, to the byte, what prometheus_client's own writers make from
the same snapshot's metric families (render.families), in both formats; its line cache
reuses a cgroup's lines only while the collector hands over the very same sample object."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_exporter_names import weird_view
from test_exporter_support import fixture_view

from monitor.exporter import Exporter
from monitor.exporter.render import ExportView, Format, families, render, write
from monitor.exporter.writer import LineCache, cgroup_lines, escape_help, escape_value
from runtime.cgroupfs.cpu import CpuStat


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("view_of", [fixture_view, weird_view], ids=["fixture", "weird-names"])
def test_writer_matches_prometheus_client(tmp_path: Path, fmt: Format, view_of: object) -> None:
    view: ExportView = view_of(tmp_path)  # type: ignore[operator]
    ours = write(view, fmt)
    theirs = render(families(view), fmt)
    assert ours.decode().splitlines() == theirs.decode().splitlines()
    assert ours == theirs


def test_writer_matches_with_errors_and_no_cgroups(tmp_path: Path) -> None:
    view = fixture_view(tmp_path, errors={"parse": 2, "gone": 5, "read": 1})
    empty = dataclasses.replace(
        view,
        snapshot=dataclasses.replace(
            view.snapshot, sample=dataclasses.replace(view.snapshot.sample, cgroups={})
        ),
    )
    for v in (view, empty):
        for fmt in Format:
            assert write(v, fmt) == render(families(v), fmt)


def test_escapes() -> None:
    assert escape_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_help('a"b\\c\nd', openmetrics=False) == 'a"b\\\\c\\nd'
    assert escape_help('a"b\\c\nd', openmetrics=True) == 'a\\"b\\\\c\\nd'


def test_line_cache_reuses_lines_of_the_same_sample_object_only(tmp_path: Path) -> None:
    view = fixture_view(tmp_path)
    web = view.snapshot.sample.cgroups["capture/web"]
    cache = LineCache()
    names = lambda device: f"{device[0]}:{device[1]}"  # noqa: E731
    first = cache.lines("capture/web", web, names)
    assert cache.lines("capture/web", web, names) is first
    busier = dataclasses.replace(web, cpu=CpuStat(123_000_000, 0, 0))
    changed = cache.lines("capture/web", busier, names)
    assert changed is not first
    assert changed == cgroup_lines("capture/web", busier, names)
    assert b'corral_cpu_usage_seconds_total{cgroup="capture/web"} 123.0\n' in changed
    cache.retain(["other"])
    assert len(cache) == 0


def test_exporter_drops_lines_of_cgroups_no_longer_polled(tmp_path: Path) -> None:
    view = fixture_view(tmp_path)
    exporter = Exporter(1.0, sysfs=view.sysfs)
    exporter.publish(view.snapshot).body(Format.TEXT)
    cache = exporter._lines
    assert len(cache) == len(view.snapshot.sample.cgroups)
    fewer = {p: s for p, s in view.snapshot.sample.cgroups.items() if p != "capture/web"}
    smaller = dataclasses.replace(
        view.snapshot, sample=dataclasses.replace(view.snapshot.sample, cgroups=fewer)
    )
    body = exporter.publish(smaller).body(Format.TEXT)
    assert len(cache) == len(fewer)
    assert b'cgroup="capture/web"' not in body
