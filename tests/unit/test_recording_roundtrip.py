"""Recordings give back what was recorded: HostSamples equal (==) to the originals, the
names current at each frame, and Snapshots whose models build_snapshot recomputes.

Samples come from the captured fixture tree, from the host's real cgroup2 (cgroups with live
processes made for the test, some appearing and vanishing between polls) and from hand-made
edge cases (MAX limits, counters past 2^64, floats that are not hundredths).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from test_recording_support import edge_sample, fixture_fs, host_tree, read_host, write_recording

from monitor.recording import (
    Recording,
    RecordingEnded,
    RecordingError,
    RecordingWriter,
    Replayer,
    replay,
)
from monitor.sample import HostSample
from monitor.snapshot import CgroupName, build_snapshot
from runtime.cgroupfs import MAX


def _frames(path: Path) -> list[HostSample]:
    with Recording(path) as rec:
        return [f.sample for f in rec]


def test_fixture_tree_round_trip(tmp_path: Path) -> None:
    sample = read_host(fixture_fs(tmp_path))
    assert len(sample.cgroups) == 9
    worker2 = sample.cgroups["capture/batch/worker-2"].limits.io_max
    assert worker2 is not None and MAX in dataclasses.astuple(next(iter(worker2.values())))
    later = dataclasses.replace(sample, wall_time=sample.wall_time + 1, monotonic=5.0)
    write_recording(tmp_path / "f.rec", [sample, later])
    got = _frames(tmp_path / "f.rec")
    assert got == [sample, later]
    assert list(got[0].cgroups) == list(sample.cgroups)  # the walk's order, too


def test_fixture_types_survive_exactly(tmp_path: Path) -> None:
    sample = read_host(fixture_fs(tmp_path))
    write_recording(tmp_path / "f.rec", [sample])
    (got,) = _frames(tmp_path / "f.rec")
    for path, original in sample.cgroups.items():
        again = got.cgroups[path]
        for name in ("memory_max", "memory_high", "pids_max", "swap_max"):
            before, after = getattr(original.limits, name), getattr(again.limits, name)
            assert (before is MAX) == (after is MAX), (path, name)
            assert (before is None) == (after is None), (path, name)
        assert again.io is None or all(type(d).__name__ == "Device" for d in again.io)


def test_edge_values_round_trip(tmp_path: Path) -> None:
    samples = [edge_sample(1.5e9), edge_sample(1.5e9 + 0.5), edge_sample(1.5e9 + 1.0)]
    write_recording(tmp_path / "e.rec", samples)
    got = _frames(tmp_path / "e.rec")
    assert got == samples
    line = next(iter(got[0].cgroups.values())).pressure["cpu"].some
    assert line.avg10 == 0.1 + 0.2 and line.avg60 == float("inf")


def test_host_cgroup2_polls_round_trip(tmp_path: Path, host_cgroup2: Path) -> None:
    """Several polls of the host's real cgroup2 with busy and sleeping processes; one cgroup
    appears and another vanishes between polls; every frame comes back equal."""
    samples: list[HostSample] = []
    with host_tree(host_cgroup2, "rec") as tree:
        for i in range(4):
            tree.add(f"c{i}", busy=i == 0)
        for poll in range(8):
            if poll == 3:
                tree.add("late")
            if poll == 5:
                tree.remove("c2")
            samples.append(tree.sample())
            time.sleep(0.05)
    assert any(f"{tree.base}/late" in s.cgroups for s in samples)
    assert f"{tree.base}/c2" not in samples[-1].cgroups
    busy = [s.cgroups[f"{tree.base}/c0"].cpu for s in samples]
    assert busy[0] is not None and busy[-1] is not None
    assert busy[-1].usage_usec > busy[0].usage_usec  # the figures really moved
    write_recording(tmp_path / "h.rec", samples, keyframe_every=3)
    assert _frames(tmp_path / "h.rec") == samples


def test_cgroups_appear_vanish_and_change_shape(tmp_path: Path) -> None:
    """A cgroup gone for a frame and back, a limit that goes from MAX to a number and back,
    a controller's files appearing: each frame decodes to what was written."""
    base = read_host(fixture_fs(tmp_path))
    web = base.cgroups["capture/web"]
    limited = dataclasses.replace(web, limits=dataclasses.replace(web.limits, memory_max=64 << 20))
    without_io = dataclasses.replace(web, io=None, memory_stat=None)
    variants = [
        base.cgroups,
        {k: v for k, v in base.cgroups.items() if k != "capture/web"},
        {**base.cgroups, "capture/web": limited},
        {"capture/web": without_io, **base.cgroups},
        {**base.cgroups, "capture/web": web},
        dict(reversed(base.cgroups.items())),
        {},
    ]
    samples = [HostSample(100.0 + i, float(i), cg, {"gone": i}) for i, cg in enumerate(variants)]
    write_recording(tmp_path / "s.rec", samples, keyframe_every=100)
    got = _frames(tmp_path / "s.rec")
    assert got == samples
    assert [list(s.cgroups) for s in got] == [list(s.cgroups) for s in samples]


def test_names_change_mid_recording(tmp_path: Path) -> None:
    sample = read_host(fixture_fs(tmp_path))
    web = CgroupName("capture/web", "container", "web", "3f2a9c", {"app": "web", "tier": "é"})
    batch = CgroupName("capture/batch", "slice", "batch.slice")
    names = [
        {},
        {"capture/web": web},
        {"capture/web": web},
        {"capture/web": dataclasses.replace(web, labels={"app": "web2"}), "capture/batch": batch},
        {"capture/batch": batch},  # web's name deleted in a delta frame
        {"capture/batch": batch},  # a keyframe
        {},
    ]
    samples = [dataclasses.replace(sample, monotonic=float(i)) for i in range(len(names))]
    write_recording(tmp_path / "n.rec", samples, names, keyframe_every=5)
    with Recording(tmp_path / "n.rec") as rec:
        assert [dict(f.names) for f in rec] == names
        assert rec.frame(4).names == names[4]  # random access, from the keyframe at 0
        assert rec.frame(1).names == names[1]


def test_random_access_and_time_index(tmp_path: Path) -> None:
    samples = [edge_sample(1000.0 + i) for i in range(25)]
    write_recording(tmp_path / "r.rec", samples, keyframe_every=7)
    with Recording(tmp_path / "r.rec") as rec:
        assert len(rec) == 25
        for i in (24, 3, 7, 8, 0, 13, 14, -1, 6):
            assert rec.frame(i).sample == samples[i]
        assert rec.index_at(1012.5) == 12 and rec.index_at(1012.0) == 12
        assert rec.index_at(0.0) == 0 and rec.index_at(9e9) == 24
        assert rec.times == (1000.0, 1024.0)
        assert rec.frame(5).collect_seconds == 0.005


def test_replay_yields_snapshots_with_models_recomputed(tmp_path: Path, host_cgroup2: Path) -> None:
    with host_tree(host_cgroup2, "replay") as tree:
        tree.add("busy", busy=True)
        samples = []
        for _ in range(4):
            samples.append(tree.sample())
            time.sleep(0.1)
    names = {f"{tree.base}/busy": CgroupName(f"{tree.base}/busy", "cgroup", "busy")}
    write_recording(tmp_path / "p.rec", samples, [names] * len(samples), keyframe_every=2)
    snaps = list(replay(tmp_path / "p.rec"))
    assert [s.seq for s in snaps] == [1, 2, 3, 4]
    for i, snap in enumerate(snaps):
        prev = samples[i - 1] if i else None
        expected = build_snapshot(prev, samples[i], seq=i + 1, names=names, collect_seconds=0)
        assert snap.sample == samples[i] and snap.models == expected.models
        assert snap.names == names
    busy = snaps[-1].models[f"{tree.base}/busy"]
    # A busy loop, replayed (how much of a core it got depends on the load of the host).
    assert busy.cpu_cores is not None and busy.cpu_cores > 0.0
    assert snaps[0].models[f"{tree.base}/busy"].cpu_cores is None  # no previous frame
    from_two = list(replay(tmp_path / "p.rec", start=2))
    assert [s.seq for s in from_two] == [3, 4] and from_two[0].models == snaps[2].models
    since = list(replay(tmp_path / "p.rec", since=samples[1].wall_time))
    assert since[0].seq == 2


def test_compact_static_data_is_not_repeated(tmp_path: Path) -> None:
    """An unchanged tree costs a few bytes per frame after the keyframe."""
    sample = read_host(fixture_fs(tmp_path))
    samples = [dataclasses.replace(sample, monotonic=float(i)) for i in range(10)]
    w = write_recording(tmp_path / "c.rec", samples)
    with Recording(tmp_path / "c.rec") as rec:
        sizes = [rec.info(i).size for i in range(len(rec))]
    assert sizes[1] * 10 < sizes[0], sizes
    assert w.bytes_per_cgroup_sample is not None and w.bytes_per_cgroup_sample < 40


def test_replayer_polls_like_the_collector(tmp_path: Path) -> None:
    samples = [edge_sample(1000.0 + i) for i in range(5)]
    write_recording(tmp_path / "p.rec", samples, keyframe_every=2)
    expected = list(replay(tmp_path / "p.rec"))
    player = Replayer(tmp_path / "p.rec", start=1)
    try:
        got = [player.poll() for _ in range(4)]
        assert got == expected[1:]  # frame 1's models against frame 0, as in replay()
        with pytest.raises(RecordingEnded, match="replayed all 5 frames"):
            player.poll()
    finally:
        player.close()
    with pytest.raises(RecordingError, match=r"start frame 6 outside 0\.\.5"):
        Replayer(tmp_path / "p.rec", start=6)


def test_refresh_follows_a_recording_being_written(tmp_path: Path) -> None:
    samples = [edge_sample(1000.0 + i) for i in range(4)]
    path = tmp_path / "live.rec"
    with RecordingWriter(path, keyframe_every=3) as writer:
        writer.write(samples[0])
        with Recording(path) as rec:
            assert len(rec) == 1 and rec.frame(0).sample == samples[0]
            writer.write(samples[1])
            with path.open("ab") as f:  # the writer's next frame, half written
                f.write(b"\x40\x00\x00\x00\x12")
            assert rec.refresh() == 2 and rec.truncation is not None
            os.truncate(path, path.stat().st_size - 5)
            writer.write(samples[2])
            writer.write(samples[3])
            assert rec.refresh() == 4 and rec.truncation is None
            assert [f.sample for f in rec] == samples
