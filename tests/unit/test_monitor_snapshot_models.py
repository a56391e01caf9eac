"""Snapshot.models: built on first read, equal to building them all at once, and the same
when many threads read them at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_exporter_support import fixture_fs, read_host

from monitor import snapshot as snapshot_module
from monitor.model import build_model
from monitor.snapshot import Snapshot, build_snapshot


def test_models_are_built_when_read_and_equal_the_eager_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = read_host(fixture_fs(tmp_path), monotonic=1000.0)
    second = read_host(fixture_fs(tmp_path / "again"), monotonic=1001.5)
    built: list[str] = []
    real = snapshot_module.build_model
    monkeypatch.setattr(
        snapshot_module, "build_model", lambda p, c, dt: built.append(c.path) or real(p, c, dt)
    )
    snap = build_snapshot(first, second, seq=2, names={}, collect_seconds=0.0)
    assert built == [] and len(snap.models) == len(second.cgroups)
    web = snap.models["capture/web"]
    assert built == ["capture/web"] and snap.models["capture/web"] is web
    eager = {p: build_model(first.cgroups.get(p), s, 1.5) for p, s in second.cgroups.items()}
    assert dict(snap.models) == eager and snap.models == eager
    with pytest.raises(KeyError):
        snap.models["not/polled"]


def test_models_read_by_many_threads_at_once(tmp_path: Path) -> None:
    first = read_host(fixture_fs(tmp_path), monotonic=1000.0)
    second = read_host(fixture_fs(tmp_path / "again"), monotonic=1002.0)
    eager = {p: build_model(first.cgroups.get(p), s, 2.0) for p, s in second.cgroups.items()}
    for _ in range(50):
        snap = build_snapshot(first, second, seq=2, names={}, collect_seconds=0.0)
        seen: list[dict[str, object]] = []

        def read_all(snap: Snapshot = snap, seen: list[dict[str, object]] = seen) -> None:
            seen.append({p: snap.models[p] for p in eager})

        threads = [threading.Thread(target=read_all) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(s == eager for s in seen)
