"""Recordings of the live collector's polls (it shares unchanged CgroupSample objects between
polls, which the encoder and decoder exploit), and the recording loop's tick schedule."""

from __future__ import annotations

import time
from pathlib import Path

from test_recording_support import fixture_fs, host_tree

from monitor.collector import Collector, CollectorConfig
from monitor.recording import Recording, RecordingWriter, replay
from monitor.recording.recorder import Progress, record
from monitor.snapshot import Snapshot
from runtime.cgroupfs import CgroupFS


def test_collector_polls_of_the_fixture_tree_round_trip(tmp_path: Path) -> None:
    """Three polls of the captured tree, with a counter moved and a limit changed between
    them, written as the collector returned them."""
    fs = fixture_fs(tmp_path)
    web = fs.path("capture/web")
    snaps: list[Snapshot] = []
    with Collector(fs) as collector, RecordingWriter(tmp_path / "c.rec") as writer:
        for poll in range(3):
            if poll == 1:
                text = (web / "cpu.stat").read_text().replace("usage_usec ", "usage_usec 9")
                (web / "cpu.stat").write_text(text)
            if poll == 2:
                (web / "memory.max").write_text("67108864\n")
            snap = collector.poll()
            writer.write(snap.sample, snap.names, collect_seconds=snap.collect_seconds)
            snaps.append(snap)
    batch = [s.sample.cgroups["capture/batch"] for s in snaps]
    assert batch[0] is batch[1] is batch[2]  # the collector's sharing, exercised here
    got = list(replay(tmp_path / "c.rec"))
    assert [g.sample for g in got] == [s.sample for s in snaps]
    assert [g.names for g in got] == [s.names for s in snaps]
    assert [g.collect_seconds for g in got] == [s.collect_seconds for s in snaps]
    assert got[2].sample.cgroups["capture/web"].limits.memory_max == 64 << 20


def test_collector_polls_of_the_host_round_trip(tmp_path: Path, host_cgroup2: Path) -> None:
    with host_tree(host_cgroup2, "coll") as tree:
        tree.add("busy", busy=True)
        tree.add("idle")
        config = CollectorConfig(subtree=tree.base)
        snaps = []
        with Collector(CgroupFS(host_cgroup2), config) as collector:
            for poll in range(6):
                if poll == 2:
                    tree.add("late")
                if poll == 4:
                    tree.remove("idle")
                snaps.append(collector.poll())
                time.sleep(0.05)
    with RecordingWriter(tmp_path / "h.rec", keyframe_every=4) as writer:
        for snap in snaps:
            writer.write(snap.sample, snap.names)
    got = list(replay(tmp_path / "h.rec"))
    assert [g.sample for g in got] == [s.sample for s in snaps]
    assert [g.models for g in got[1:]] == [s.models for s in snaps[1:]]
    assert f"{tree.base}/late" in got[-1].names and f"{tree.base}/idle" not in got[-1].names


class _Clock:
    """Time that moves only when the loop polls (``poll_seconds``) or waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 6))
        self.now += seconds
        return False


class _Poller:
    def __init__(self, clock: _Clock, snap: Snapshot, poll_seconds: list[float]) -> None:
        self.clock, self.snap, self.poll_seconds = clock, snap, poll_seconds
        self.at: list[float] = []

    def poll(self) -> Snapshot:
        self.at.append(round(self.clock.now - 100.0, 6))
        self.clock.now += self.poll_seconds[min(len(self.at) - 1, len(self.poll_seconds) - 1)]
        return self.snap


def _one_snapshot(tmp_path: Path) -> Snapshot:
    with Collector(fixture_fs(tmp_path)) as collector:
        return collector.poll()


def test_loop_polls_on_a_grid_and_skips_overrun_ticks(tmp_path: Path) -> None:
    clock, snap = _Clock(), _one_snapshot(tmp_path)
    poller = _Poller(clock, snap, [0.25, 2.5, 0.25])
    seen: list[Progress] = []
    with RecordingWriter(tmp_path / "g.rec") as writer:
        done = record(
            poller, writer, interval=1.0, duration=10.0, wait=clock.wait, clock=clock,
            progress=seen.append,
        )  # fmt: skip
    # 0: a short poll; 1: a 2.5 s poll overruns ticks 2 and 3; then every second to 10.
    assert poller.at == [0.0, 1.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert done.frames == 9 == len(seen) and done.remaining == 0.0
    assert [p.remaining for p in seen][:2] == [9.75, 6.5]
    with Recording(tmp_path / "g.rec") as rec:
        assert len(rec) == 9


def test_loop_without_duration_stops_when_told(tmp_path: Path) -> None:
    clock, snap = _Clock(), _one_snapshot(tmp_path)
    poller = _Poller(clock, snap, [0.1])
    stops = iter([False, False, True])
    with RecordingWriter(tmp_path / "s.rec") as writer:
        done = record(
            poller, writer, interval=0.5, wait=lambda s: clock.wait(s) or next(stops), clock=clock
        )
    assert done.frames == 3 and done.remaining is None
    assert poller.at == [0.0, 0.5, 1.0]
    with Recording(tmp_path / "s.rec") as rec:
        assert [f.sample for f in rec] == [snap.sample] * 3
