"""The container log: JSON lines as docker's json-file driver writes them.

One object per line, ``{"log": TEXT, "stream": "stdout"|"stderr", "time": RFC3339Nano}``
with the line's own "\\n" kept in TEXT; a line longer than MAX_LINE is cut into several
entries (docker's copier does the same at 16 KiB), and a last line without "\\n" is written
when its stream ends. Times are UTC with nine fractional digits (a valid RFC 3339 time Go's
RFC3339Nano parser reads).

The shim writes with ``LogWriter``: the file is opened O_APPEND and every entry is one
write(2) of a whole line, so a reader never sees half an entry from a live writer (on a
local filesystem an O_APPEND write of a regular file is placed and completed as a unit) and
a killed shim leaves only whole lines. Readers (``LogReader``) still take only lines that end
in "\\n", skip malformed ones and count them.

Only the standard library is imported here: the long-lived shim imports this module.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from runtime.container.record import format_time, rfc3339_now

STREAMS = ("stdout", "stderr")
MAX_LINE = 16 * 1024  # characters per entry, as docker's json-file copier
_BLOCK = 64 * 1024
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


now = rfc3339_now  # the current time as ``format_time`` writes it


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (any offset, 0-9 fractional digits)."""
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"time {text!r}: expected RFC 3339, like 2024-05-01T12:00:00.5Z")
    base = time.strptime(m[1], "%Y-%m-%dT%H:%M:%S")
    seconds = _timegm(base)
    if m[3] != "Z":
        sign = 1 if m[3][0] == "+" else -1
        seconds -= sign * (int(m[3][1:3]) * 3600 + int(m[3][4:6]) * 60)
    return seconds * 10**9 + int((m[2] or "0").ljust(9, "0"))


def _timegm(t: time.struct_time) -> int:
    # calendar.timegm without importing calendar: days from the civil date (Howard Hinnant).
    y, m, d = t.tm_year - (t.tm_mon <= 2), t.tm_mon, t.tm_mday
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec


@dataclass(frozen=True)
class LogEntry:
    stream: str
    time: str
    log: str


def encode_entry(stream: str, text: str, time_ns: int) -> bytes:
    """One JSON line, keys in docker's order."""
    obj = {"log": text, "stream": stream, "time": format_time(time_ns)}
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class LogWriter:
    """Appends a container's stdout and stderr to its log, one write(2) per line.

    Bytes are decoded as UTF-8 per stream (invalid bytes become U+FFFD, as docker's JSON
    encoder does) and held until their line ends, MAX_LINE characters accumulate, or the
    stream is flushed at its end."""

    def __init__(self, path: str | os.PathLike[str], mode: int = 0o640) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, mode)
        self._pending = {s: "" for s in STREAMS}
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}

    def write(self, stream: str, data: bytes) -> None:
        """Take a chunk read from the container's ``stream``; write every completed line."""
        text = self._pending[stream] + self._decoders[stream].decode(data)
        stamp = time.time_ns()
        start = 0
        while True:
            end = text.find("\n", start, start + MAX_LINE)
            if end >= 0:
                self._emit(stream, text[start : end + 1], stamp)
                start = end + 1
            elif len(text) - start >= MAX_LINE:
                self._emit(stream, text[start : start + MAX_LINE], stamp)
                start += MAX_LINE
            else:
                break
        self._pending[stream] = text[start:]

    def flush(self, stream: str) -> None:
        """The stream ended: write what is left of its last line."""
        text = self._pending[stream] + self._decoders[stream].decode(b"", final=True)
        self._pending[stream] = ""
        if text:
            self._emit(stream, text, time.time_ns())

    def _emit(self, stream: str, text: str, stamp: int) -> None:
        view = memoryview(encode_entry(stream, text, stamp))
        while view:  # a regular file takes it whole unless the disk is full (then OSError)
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd >= 0:
            for stream in STREAMS:
                self.flush(stream)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogReader:
    """Reads a log file; lines that are not a log entry are skipped and counted."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.malformed = 0

    def parse(self, line: bytes) -> LogEntry | None:
        try:
            obj = json.loads(line)
            entry = LogEntry(obj["stream"], obj["time"], obj["log"])
        except (ValueError, KeyError, TypeError):
            entry = None
        if entry is None or not all(isinstance(v, str) for v in vars(entry).values()):
            self.malformed += 1
            return None
        return entry

    def entries(self, tail: int | None = None) -> Iterator[LogEntry]:
        """Every whole entry now in the file (the last ``tail`` when given); none when the
        file does not exist yet."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, generator lifetime
        except FileNotFoundError:
            return
        with f:
            f.seek(tail_offset(f, tail) if tail is not None else 0)
            yield from self._complete(f, b"")[0]

    def follow(
        self,
        stopped: Callable[[], bool],
        tail: int | None = None,
        interval: float = 0.1,
    ) -> Iterator[LogEntry]:
        """The entries (from the last ``tail``) and then each new one as it is written,
        until ``stopped()`` is true and everything written before that has been read."""
        f: IO[bytes] | None = None
        rest = b""
        try:
            while True:
                done = stopped()  # asked before reading: all the writer did is then read
                if f is None:
                    f = self._open_at(tail)
                got: list[LogEntry] = []
                if f is not None:
                    got, rest = self._complete(f, rest)
                    yield from got
                if done and not got:
                    return
                if not got:
                    time.sleep(interval)
        finally:
            if f is not None:
                f.close()

    def _open_at(self, tail: int | None) -> IO[bytes] | None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            return None
        f.seek(tail_offset(f, tail) if tail is not None else 0)
        return f

    def _complete(self, f: IO[bytes], rest: bytes) -> tuple[list[LogEntry], bytes]:
        """Entries of the whole lines from f's position on; the unfinished line is kept."""
        data = rest + f.read()
        cut = data.rfind(b"\n") + 1
        entries = [e for line in data[:cut].splitlines() if (e := self.parse(line)) is not None]
        return entries, data[cut:]


def tail_offset(f: IO[bytes], n: int) -> int:
    """Where the last ``n`` whole lines of a file start (an unfinished last line is not one
    of them), reading it backwards by blocks: just past the (n+1)-th "\n" from the end."""
    pos, found = f.seek(0, os.SEEK_END), 0
    while pos > 0:
        size = min(_BLOCK, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            if found == n:
                return pos + i + 1
            found += 1
    return 0
