"""Damaged, foreign, empty and newer recordings: each gives a clear error or warning that
names the file (and the frame and byte offset where it applies), and replays what it can."""

from __future__ import annotations

import dataclasses
import json
import struct
import warnings
from pathlib import Path

import pytest
from test_recording_support import edge_sample, write_recording

from monitor.recording import (
    FORMAT_VERSION,
    CorruptFrame,
    NewerFormat,
    NotARecording,
    Recording,
    RecordingError,
    RecordingWriter,
    TruncatedRecording,
    replay,
)
from monitor.recording.codec import CodecError, SampleCodec, current_schema
from monitor.recording.format import (
    DELTA,
    FILE_HEAD,
    KEYFRAME,
    MAGIC,
    encode_frame,
    encode_header,
    host_info,
)
from monitor.recording.frames import FrameEncoder

SAMPLES = [edge_sample(1000.0 + i) for i in range(6)]


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "r.rec"
    write_recording(path, SAMPLES, keyframe_every=4)
    return path


def _replay_all(path: Path) -> tuple[list[int], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seqs = [s.seq for s in replay(path)]
    return seqs, [str(w.message) for w in caught if w.category is TruncatedRecording]


def test_truncated_at_every_offset_of_the_last_frame(recording: Path, tmp_path: Path) -> None:
    data = recording.read_bytes()
    with Recording(recording) as rec:
        last = rec.info(len(rec) - 1)
    assert last.offset + last.size == len(data)
    cut_path = tmp_path / "cut.rec"
    for cut in range(last.offset + 1, len(data)):
        cut_path.write_bytes(data[:cut])
        seqs, messages = _replay_all(cut_path)
        assert seqs == [1, 2, 3, 4, 5], cut
        (message,) = messages
        have = cut - last.offset
        missing = len(data) - cut if have >= 8 else None
        assert str(cut_path) in message and f"offset {last.offset}" in message, message
        assert f"{have} bytes present" in message and "5 whole frames" in message, message
        if missing is not None:
            assert f", {missing} bytes cut" in message, (cut, message)
        else:
            assert "at least" in message, message
        with Recording(cut_path) as rec:
            assert rec.truncation is not None and len(rec) == 5
            assert rec.frame(-1).sample == SAMPLES[4]


def test_cut_exactly_between_frames_is_a_whole_recording(recording: Path) -> None:
    data = recording.read_bytes()
    with Recording(recording) as rec:
        end_of_third = rec.info(2).offset + rec.info(2).size
    recording.write_bytes(data[:end_of_third])
    seqs, messages = _replay_all(recording)
    assert seqs == [1, 2, 3] and messages == []


def test_newer_format_version_names_both_versions(recording: Path) -> None:
    data = bytearray(recording.read_bytes())
    struct.pack_into("<H", data, len(MAGIC), FORMAT_VERSION + 1)
    recording.write_bytes(bytes(data))
    with pytest.raises(NewerFormat) as err:
        Recording(recording)
    message = str(err.value)
    assert f"version {FORMAT_VERSION + 1}" in message
    assert f"version {FORMAT_VERSION})" in message and str(recording) in message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"# HELP corral_cpu_usage_seconds_total ...\n",
        json.dumps({"samples": []}).encode(),
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        MAGIC[:5],
    ],
    ids=["empty-file", "exposition", "json", "png", "half-magic"],
)
def test_not_a_recording(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.rec"
    path.write_bytes(content)
    with pytest.raises(NotARecording, match="not a corral recording") as err:
        Recording(path)
    assert str(path) in str(err.value)


def test_truncated_inside_the_file_header(recording: Path) -> None:
    data = recording.read_bytes()
    for cut in (len(MAGIC), FILE_HEAD.size - 1, FILE_HEAD.size + 3):
        recording.write_bytes(data[:cut])
        with pytest.raises(RecordingError, match=r"truncated inside its (file )?header"):
            Recording(recording)


def test_corrupt_frame_stops_with_frame_number_and_offset(recording: Path) -> None:
    with Recording(recording) as rec:
        third = rec.info(3)
    data = bytearray(recording.read_bytes())
    data[third.offset + third.size - 2] ^= 0x40  # a bit flip in the compressed body
    recording.write_bytes(bytes(data))
    got = []
    with pytest.raises(CorruptFrame) as err:
        for snap in replay(recording):
            got.append(snap.sample)
    assert got == SAMPLES[:3]
    assert err.value.frame == 3 and err.value.offset == third.offset
    assert f"frame 3 at byte offset {third.offset}" in str(err.value)
    assert "CRC32" in str(err.value) and str(recording) in str(err.value)
    with Recording(recording) as rec:
        # Random access past it decodes from the keyframe at 4, never reading frame 3.
        assert rec.frame(5).sample == SAMPLES[5]
        with pytest.raises(CorruptFrame, match="frame 3"):
            rec.frame(3)
        assert rec.frame(2).sample == SAMPLES[2]


def test_damaged_length_field_and_kind(recording: Path) -> None:
    with Recording(recording) as rec:
        second = rec.info(2)
    data = bytearray(recording.read_bytes())
    struct.pack_into("<I", data, second.offset, 3)  # shorter than any frame
    recording.write_bytes(bytes(data))
    with Recording(recording) as rec:
        assert len(rec) == 2
        with pytest.raises(CorruptFrame, match=f"frame 2 at byte offset {second.offset}"):
            list(rec)


def test_header_crc_is_checked(recording: Path) -> None:
    data = bytearray(recording.read_bytes())
    data[FILE_HEAD.size + 2] ^= 0x01
    recording.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="header is corrupt"):
        Recording(recording)


def test_empty_recording(tmp_path: Path) -> None:
    path = tmp_path / "empty.rec"
    RecordingWriter(path, meta={"interval_seconds": 1.0}).close()
    with Recording(path) as rec:
        assert len(rec) == 0 and rec.truncation is None and rec.times is None
        assert rec.header["interval_seconds"] == 1.0
        assert rec.header["kernel"] and rec.header["corral_version"]
        assert list(rec) == []
        with pytest.raises(IndexError):
            rec.index_at(0.0)
    assert list(replay(path)) == [] and list(replay(path, since=5.0)) == []


def test_writer_refuses_an_existing_file_and_writes_after_close(recording: Path) -> None:
    before = recording.read_bytes()
    with pytest.raises(RecordingError, match="already exists"):
        RecordingWriter(recording)
    assert recording.read_bytes() == before
    w = RecordingWriter(recording, overwrite=True)
    w.close()
    with pytest.raises(RecordingError, match="closed"):
        w.write(SAMPLES[0])


def test_recording_from_an_older_schema_replays(tmp_path: Path) -> None:
    """A recording made before a field existed replays with that field at its default."""
    schema = current_schema()
    schema["CgroupSample"].remove("nr_procs")
    schema["PidsEvents"].remove("max_imposed")
    encoder = FrameEncoder(SampleCodec(schema))
    path = tmp_path / "old.rec"
    with path.open("wb") as f:
        f.write(encode_header({**host_info(), "schema": schema}))
        for i, sample in enumerate(SAMPLES[:3]):
            body = encoder.encode(sample.cgroups, sample.errors, {}, keyframe=i == 0)
            kind = KEYFRAME if i == 0 else DELTA
            f.write(encode_frame(kind, sample.wall_time, sample.monotonic, 0.0, body))
    got = [s.sample for s in replay(path)]
    expected = [
        dataclasses.replace(
            s,
            cgroups={k: dataclasses.replace(c, nr_procs=None) for k, c in s.cgroups.items()},
        )
        for s in SAMPLES[:3]
    ]
    assert got == expected


def test_schema_this_corral_cannot_read(recording: Path, tmp_path: Path) -> None:
    """A field this corral lacks, or a required field the recording lacks: a clear error."""
    data = recording.read_bytes()
    size = struct.unpack_from("<I", data, len(MAGIC) + 2)[0]
    header = json.loads(data[FILE_HEAD.size : FILE_HEAD.size + size])
    frames = data[FILE_HEAD.size + size :]

    def with_schema(name: str, change: dict[str, list[str]]) -> Path:
        path = tmp_path / name
        path.write_bytes(encode_header({**header, "schema": {**header["schema"], **change}}))
        with path.open("ab") as f:
            f.write(frames)
        return path

    extra = [*header["schema"]["CgroupEvents"], "thawed"]
    with pytest.raises(RecordingError, match="CgroupEvents has no field thawed"):
        Recording(with_schema("newer.rec", {"CgroupEvents": extra}))
    without = [f for f in header["schema"]["CpuStat"] if f != "usage_usec"]
    with pytest.raises(RecordingError, match="CpuStat lacks the required field usage_usec"):
        Recording(with_schema("older.rec", {"CpuStat": without}))


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.rec"
    with pytest.raises(RecordingError, match="the header cannot hold"):
        RecordingWriter(path, meta={"when": object()})
    assert not path.exists()
    with RecordingWriter(path) as w:
        w.write(SAMPLES[0])
        size = path.stat().st_size
        cgroups = dict(SAMPLES[1].cgroups)
        first = next(iter(cgroups))
        cgroups[first] = dataclasses.replace(cgroups[first], memory_current=1.5)
        with pytest.raises(CodecError, match=r"cannot record 1\.5: expected an integer"):
            w.write(dataclasses.replace(SAMPLES[1], cgroups=cgroups))
        wrong = {"elsewhere": next(iter(SAMPLES[1].cgroups.values()))}
        with pytest.raises(ValueError, match="holds the sample of"):
            w.write(dataclasses.replace(SAMPLES[1], cgroups=wrong))
        assert path.stat().st_size == size and w.frames == 1
        w.write(SAMPLES[2])
    with Recording(path) as rec:
        assert [f.sample for f in rec] == [SAMPLES[0], SAMPLES[2]]
