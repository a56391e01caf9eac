"""ReplaySource over a recording captured from the real 6.1 kernel in `corral machine`
(tests/fixtures/recordings/demo.corral, see its README): playing in recording time, seeking
back and forth, stopping at both ends, the plots' window, and what the kernel did."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboards.tui.sources.base import Frame, SourceDisconnected
from dashboards.tui.sources.replay import ReplaySource
from monitor.recording import Recording, RecordingError

RECORDING = Path(__file__).resolve().parent.parent / "fixtures" / "recordings" / "demo.corral"
WEB = "demo.slice/web.service"
BATCH = "demo.slice/batch.service"


@pytest.fixture
def rec() -> Iterator[Recording]:
    with Recording(RECORDING) as r:
        yield r


def test_first_frame_at_once_with_its_position(rec: Recording) -> None:
    source = ReplaySource(RECORDING)
    try:
        began = time.monotonic()
        frame = source.next_frame()
        assert time.monotonic() - began < 0.5
    finally:
        source.close()
    assert (source.label, source.seekable, len(source)) == ("replay: demo.corral", True, 121)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.info(0).wall_time))
    assert frame.position == f"frame 1/121 {stamp}" and stamp.startswith("2026-11-29 00:24:")
    assert frame.snapshot.seq == 1 and frame.history == (frame.snapshot,)
    assert frame.audit == () and source.processes(WEB) is None


def same(frame: Frame, rec: Recording, index: int) -> None:
    want = rec.snapshot(index)
    assert frame.snapshot.seq == index + 1
    assert frame.snapshot.sample == want.sample
    assert dict(frame.snapshot.models) == dict(want.models)


def test_seek_steps_frames_and_stops_at_both_ends(rec: Recording) -> None:
    source = ReplaySource(RECORDING)
    try:
        same(source.seek(10), rec, 10)
        same(source.seek(-3), rec, 7)
        assert source.seek(-100).position.startswith("frame 1/121 ")
        same(source.seek(0), rec, 0)
        end = source.seek(10_000)
        same(end, rec, 120)
        assert end.position.startswith("frame 121/121 ")
        same(source.seek(1), rec, 120)  # already at the end: stays
    finally:
        source.close()


def test_play_moves_interval_times_speed_in_recording_time(rec: Recording) -> None:
    # interval 0.05 s at speed 20: one second of the recording (two 0.5 s frames) per call
    source = ReplaySource(RECORDING, speed=20, interval=0.05)
    start = rec.info(0).wall_time
    try:
        source.next_frame()
        began = time.monotonic()
        for k in range(1, 6):
            frame = source.next_frame()
            assert frame.snapshot.seq == rec.index_at(start + k * 1.0) + 1
        assert time.monotonic() - began >= 5 * 0.05
        assert frame.snapshot.seq in (10, 11, 12)  # ~5 s of frames 0.5 s apart
        source.seek(118)
        ends = [source.next_frame().snapshot.seq for _ in range(3)]
    finally:
        source.close()
    assert ends == [121, 121, 121]  # stops at the last frame


def test_play_goes_on_from_where_a_seek_left_it(rec: Recording) -> None:
    source = ReplaySource(RECORDING, speed=10, interval=0.05)  # half a second per call
    try:
        source.next_frame()
        source.seek(40)
        frame = source.next_frame()
    finally:
        source.close()
    assert frame.snapshot.seq == rec.index_at(rec.info(40).wall_time + 0.5) + 1


def test_history_is_the_window_before_the_current_frame(rec: Recording) -> None:
    source = ReplaySource(RECORDING, history_seconds=5.0)
    try:
        frame = source.seek(60)
        back = source.seek(-20)
    finally:
        source.close()
    walls = [s.sample.wall_time for s in frame.history]
    assert frame.history[-1] is frame.snapshot
    assert [s.seq for s in frame.history] == list(range(frame.history[0].seq, 62))
    assert walls[-1] - walls[0] <= 5.0 and 9 <= len(walls) <= 11  # ~0.5 s apart
    assert rec.info(frame.history[0].seq - 2).wall_time < walls[-1] - 5.0  # none left out
    assert back.history[-1].seq == 41 and back.history[0].seq < 41
    for snap in frame.history:
        same(Frame(snap, ()), rec, snap.seq - 1)  # each rebuilt against the frame before it


def test_time_travel_shows_what_the_kernel_did(rec: Recording) -> None:
    """web.service: a busy loop under cpu.max 0.2 raised to 0.5 about 30 s in, throttled
    in every period; batch.service: memory.high 48M under an allocator growing to 80M."""
    source = ReplaySource(RECORDING)
    try:
        late = source.seek(110).snapshot
        early = source.seek(-100).snapshot
    finally:
        source.close()
    for snap, quota, cores in ((early, 20000, 0.2), (late, 50000, 0.5)):
        web = snap.sample.cgroups[WEB]
        assert web.limits.cpu_max is not None and web.limits.cpu_max.quota == quota
        model = snap.models[WEB]
        assert model.cpu_cores == pytest.approx(cores, abs=0.05)
        assert model.throttled_ratio == pytest.approx(1.0, abs=0.1)
    assert early.names[WEB].kind == "service" and early.names[WEB].name == "web.service"
    working_set = late.models[BATCH].working_set_bytes
    assert working_set is not None and working_set > 48 << 20  # above memory.high
    memory = late.sample.cgroups[BATCH].pressure["memory"]
    assert memory.some.avg10 > 50.0  # stalled on reclaim most of the time


def test_a_seek_while_play_waits_is_not_lost(rec: Recording) -> None:
    source = ReplaySource(RECORDING, speed=1.0, interval=0.3)
    try:
        source.next_frame()
        played: list[Frame] = []
        worker = threading.Thread(target=lambda: played.append(source.next_frame()))
        worker.start()
        time.sleep(0.05)
        source.seek(80)
        worker.join(5)
    finally:
        source.close()
    # The play step that waited through the seek shows the seek's frame, not one past it:
    # a paused app that shows it has not moved on from where the step key put it.
    assert played[0].snapshot.seq == 81


def test_closed_and_bad_files(tmp_path: Path) -> None:
    source = ReplaySource(RECORDING, interval=0.05)
    source.next_frame()
    source.close()
    with pytest.raises(SourceDisconnected, match=r"replay: demo\.corral: the source was closed"):
        source.next_frame()
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a recording\n")
    with pytest.raises(RecordingError, match=r"notes\.txt"):
        ReplaySource(bogus)
    with pytest.raises(ValueError, match="speed 0"):
        ReplaySource(RECORDING, speed=0)
