"""The container log (runtime/container/logs.py): docker's json-file lines written by
LogWriter with one write(2) each, read back whole, tailed and followed."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.container.logs import (
    MAX_LINE,
    LogEntry,
    LogReader,
    LogWriter,
    encode_entry,
    format_time,
    parse_time,
    tail_offset,
)

RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def texts(path: Path) -> list[tuple[str, str]]:
    return [(d["stream"], d["log"]) for d in lines(path)]


# -- time ------------------------------------------------------------------------------------


def test_times_are_rfc3339_utc_with_nanoseconds() -> None:
    ns = 1_714_564_800_123_456_789
    assert format_time(ns) == "2024-05-01T12:00:00.123456789Z"
    assert parse_time("2024-05-01T12:00:00.123456789Z") == ns
    assert format_time(0) == "1970-01-01T00:00:00.000000000Z"
    now = time.time_ns()
    assert parse_time(format_time(now)) == now


@pytest.mark.parametrize(
    "text",
    ["2024-05-01T14:00:00.5+02:00", "2024-05-01T11:30:00.5-00:30", "2024-05-01T12:00:00.500Z"],
)
def test_times_with_offsets_and_short_fractions_parse(text: str) -> None:
    expected = datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert parse_time(text) == int(expected * 10**6) * 1000


def test_a_leap_day_and_whole_seconds_parse() -> None:
    assert parse_time("2024-02-29T23:59:59Z") == int(
        datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp() * 10**9
    )


@pytest.mark.parametrize("text", ["", "2024-05-01 12:00:00Z", "2024-05-01T12:00:00", "yesterday"])
def test_non_rfc3339_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time(text)


# -- writing ---------------------------------------------------------------------------------


def test_entries_are_docker_json_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    before = time.time_ns()
    with LogWriter(path) as log:
        log.write("stdout", b"hello\nwor")
        log.write("stderr", b"oops\n")
        log.write("stdout", b"ld\n")
    raw = path.read_bytes().splitlines()
    assert raw[0].startswith(b'{"log":"hello\\n","stream":"stdout","time":"')
    got = lines(path)
    assert [(d["stream"], d["log"]) for d in got] == [
        ("stdout", "hello\n"),
        ("stderr", "oops\n"),
        ("stdout", "world\n"),
    ]
    for d in got:
        assert list(d) == ["log", "stream", "time"] and RFC3339_NANO.fullmatch(d["time"])
        assert before <= parse_time(d["time"]) <= time.time_ns()
    assert path.stat().st_mode & 0o777 == 0o640


def test_an_unfinished_line_is_written_when_its_stream_ends(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = LogWriter(path)
    log.write("stdout", b"no newline")
    log.write("stderr", b"err tail")
    assert path.read_bytes() == b""
    log.flush("stdout")
    assert texts(path) == [("stdout", "no newline")]
    log.close()
    assert texts(path) == [("stdout", "no newline"), ("stderr", "err tail")]


def test_long_lines_are_cut_as_docker_does(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with LogWriter(path) as log:
        log.write("stdout", b"x" * (2 * MAX_LINE + 10) + b"\n")
    assert [len(t) for _, t in texts(path)] == [MAX_LINE, MAX_LINE, 11]


def test_utf8_split_across_reads_and_invalid_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    snowman = "☃".encode()
    with LogWriter(path) as log:
        log.write("stdout", b"a" + snowman[:1])
        log.write("stdout", snowman[1:] + b"\n")
        log.write("stderr", b"bad \xff byte\n")
    assert texts(path) == [("stdout", "a☃\n"), ("stderr", "bad \ufffd byte\n")]
    assert "☃".encode() in path.read_bytes()  # written as UTF-8, not \\u escapes


def test_the_log_is_appended_to_never_truncated(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with LogWriter(path) as log:
        log.write("stdout", b"one\n")
    with LogWriter(path) as log:
        log.write("stdout", b"two\n")
    assert texts(path) == [("stdout", "one\n"), ("stdout", "two\n")]


def test_concurrent_writers_never_interleave_within_a_line(tmp_path: Path) -> None:
    """Each entry is one O_APPEND write(2): lines from two processes stay whole."""
    path = tmp_path / "log.jsonl"
    payload = {"stdout": b"o" * 3000, "stderr": b"e" * 5000}
    pids = []
    for stream in payload:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            with LogWriter(path) as log:
                for _ in range(300):
                    log.write(stream, payload[stream] + b"\n")
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    got = texts(path)
    assert len(got) == 600
    assert all(text.encode() == payload[stream] + b"\n" for stream, text in got)


# -- reading ---------------------------------------------------------------------------------


def write_lines(path: Path, count: int, partial: bytes = b"") -> None:
    with open(path, "wb") as f:
        for i in range(count):
            f.write(encode_entry("stdout", f"line {i}\n", i))
        f.write(partial)


def test_entries_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_lines(path, 5, partial=b'{"log":"half')
    reader = LogReader(path)
    assert [e.log for e in reader.entries()] == [f"line {i}\n" for i in range(5)]
    assert [e.log for e in reader.entries(tail=2)] == ["line 3\n", "line 4\n"]
    assert list(reader.entries(tail=0)) == []
    assert len(list(reader.entries(tail=99))) == 5
    assert next(reader.entries()) == LogEntry("stdout", format_time(0), "line 0\n")
    assert reader.malformed == 0  # an unfinished last line is not malformed, just not yet read


def test_tail_reads_backwards_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_lines(path, 20000)
    assert path.stat().st_size > 10 * 64 * 1024
    with open(path, "rb") as f:
        offset = tail_offset(f, 7000)
        f.seek(offset)
        assert f.read().count(b"\n") == 7000
        f.seek(offset - 1)
        assert f.read(1) == b"\n"
    assert [e.log for e in LogReader(path).entries(tail=3)] == [
        "line 19997\n",
        "line 19998\n",
        "line 19999\n",
    ]


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(
        encode_entry("stdout", "ok\n", 0)
        + b"not json\n"
        + b'{"log": 1, "stream": "stdout", "time": "x"}\n'
        + b'{"stream": "stdout"}\n'
        + b"[]\n"
        + encode_entry("stderr", "also ok\n", 1)
    )
    reader = LogReader(path)
    assert [e.log for e in reader.entries()] == ["ok\n", "also ok\n"]
    assert reader.malformed == 4


def test_a_missing_log_has_no_entries(tmp_path: Path) -> None:
    assert list(LogReader(tmp_path / "none.jsonl").entries(tail=3)) == []


def test_follow_prints_new_lines_and_ends_once_stopped_and_drained(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_lines(path, 3)
    stop = threading.Event()

    def writer() -> None:
        with LogWriter(path) as log:
            for i in range(20):
                log.write("stdout", f"new {i}\n".encode())
                time.sleep(0.005)
            log.write("stderr", b"last wo")
            time.sleep(0.05)
            log.write("stderr", b"rds\n")
        stop.set()  # the container stopped after its last write

    thread = threading.Thread(target=writer)
    thread.start()
    got = [e.log for e in LogReader(path).follow(stop.is_set, interval=0.01)]
    thread.join()
    old = [f"line {i}\n" for i in range(3)]
    assert got == old + [f"new {i}\n" for i in range(20)] + ["last words\n"]
    assert [e.log for e in LogReader(path).follow(lambda: True, tail=1)] == ["last words\n"]


def test_follow_waits_for_the_log_to_appear(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    stop = threading.Event()

    def writer() -> None:
        time.sleep(0.1)
        with LogWriter(path) as log:
            log.write("stdout", b"hi\n")
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    got = list(LogReader(path).follow(stop.is_set, interval=0.01))
    thread.join()
    assert [e.log for e in got] == ["hi\n"]


def test_follow_of_a_stopped_container_returns_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    write_lines(path, 2)
    start = time.monotonic()
    got = list(LogReader(path).follow(lambda: True, interval=5))
    assert len(got) == 2 and time.monotonic() - start < 1
    assert list(LogReader(tmp_path / "none").follow(lambda: True, interval=5)) == []
