"""Recording: a recording file opened for replay, with random access by index and time.

Opening reads the header and walks the frame headers (8 + 25 bytes each, no inflating) into
an index of offsets, kinds and times; that walk also finds a truncated end. A frame's CRC
is checked when it is decoded, so damage in the middle shows up when replay reaches it
(CorruptFrame, naming the frame and its byte offset), after every frame before it.
"""

from __future__ import annotations

import bisect
import os
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

from monitor.recording.codec import CodecError, SampleCodec
from monitor.recording.format import (
    FILE_HEAD,
    FRAME_HEAD,
    FRAME_KINDS,
    KEYFRAME,
    MAX_PAYLOAD,
    PAYLOAD_HEAD,
    CorruptFrame,
    RecordingError,
    TruncatedRecording,
    Truncation,
    decode_file_head,
    decode_header,
    inflate,
)
from monitor.recording.frames import Decoded, FrameDecoder
from monitor.recording.wire import WireError
from monitor.sample import HostSample
from monitor.snapshot import CgroupName, Snapshot, build_snapshot


class FrameInfo(NamedTuple):
    """Where a frame is and what its uncompressed prefix says (no decoding needed)."""

    offset: int
    length: int  # of the payload, after the 8-byte length and CRC
    crc: int
    kind: int
    wall_time: float
    monotonic: float
    collect_seconds: float

    @property
    def size(self) -> int:
        return FRAME_HEAD.size + self.length

    @property
    def keyframe(self) -> bool:
        return self.kind == KEYFRAME


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the HostSample as recorded, and the names current at that time."""

    index: int
    sample: HostSample
    names: Mapping[str, CgroupName]
    collect_seconds: float


class Recording:
    """A recording opened for reading. ``len()`` counts its whole frames; ``truncation``
    says what was cut from its end (None when nothing was)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot open: {e.strerror}") from e
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self.version, size, crc = decode_file_head(self.path, self._pread(0, FILE_HEAD.size))
        self.header: dict[str, Any] = decode_header(
            self.path, self._pread(FILE_HEAD.size, size), size, crc
        )
        try:
            self._codec = SampleCodec(self.header.get("schema"))
        except CodecError as e:
            raise RecordingError(f"{self.path}: {e}") from None
        self._entries: list[FrameInfo] = []
        self._keyframes: list[int] = []
        self._walls: list[float] = []
        self.truncation: Truncation | None = None
        self._damage: CorruptFrame | None = None
        self._end = FILE_HEAD.size + size  # where the next whole frame would start
        self.refresh()
        self._decoder = FrameDecoder(self._codec)
        self._pos = -1
        self._cached: Frame | None = None

    def refresh(self) -> int:
        """Index the frames written since the recording was opened (a recording still being
        written: its last frame may be partial until the writer finishes it). Returns the
        number of whole frames."""
        if self._damage is None:
            self.truncation = None
            self._index(self._end, os.fstat(self._require_fd()).st_size)
        return len(self._entries)

    def _index(self, offset: int, size: int) -> None:
        head_size = FRAME_HEAD.size + PAYLOAD_HEAD.size
        while offset < size:
            head = self._pread(offset, head_size)
            n = len(self._entries)
            if len(head) < FRAME_HEAD.size:
                self.truncation = Truncation(self.path, n, offset, len(head), None)
                return
            length, crc = FRAME_HEAD.unpack_from(head)
            if not PAYLOAD_HEAD.size < length <= MAX_PAYLOAD:
                self._damage = CorruptFrame(self.path, n, offset, f"length field {length}")
                return
            if offset + FRAME_HEAD.size + length > size:
                have, need = size - offset, FRAME_HEAD.size + length
                self.truncation = Truncation(self.path, n, offset, have, need)
                return
            kind, wall, mono, collect = PAYLOAD_HEAD.unpack_from(head, FRAME_HEAD.size)
            if kind not in FRAME_KINDS or (n == 0 and kind != KEYFRAME):
                self._damage = CorruptFrame(self.path, n, offset, f"frame kind {kind}")
                return
            if kind == KEYFRAME:
                self._keyframes.append(n)
            self._entries.append(FrameInfo(offset, length, crc, kind, wall, mono, collect))
            self._walls.append(wall)
            offset += FRAME_HEAD.size + length
            self._end = offset

    # -- access ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def frame(self, index: int) -> Frame:
        """Frame ``index`` (negative counts from the end); decodes from the keyframe at or
        before it unless replay is already just behind it."""
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: frame {index} of {len(self)}")
        if self._cached is not None and self._cached.index == i:
            return self._cached
        key = self._keyframes[bisect.bisect_right(self._keyframes, i) - 1]
        start = self._pos + 1 if key <= self._pos < i else key
        for j in range(start, i + 1):
            decoded = self._decode(j)
        entry = self._entries[i]
        sample = HostSample(entry.wall_time, entry.monotonic, decoded.cgroups, decoded.errors)
        self._cached = Frame(i, sample, decoded.names, entry.collect_seconds)
        return self._cached

    def info(self, index: int) -> FrameInfo:
        return self._entries[index]

    def index_at(self, wall_time: float) -> int:
        """The frame current at ``wall_time``: the last one taken at or before it (the
        first frame for an earlier time)."""
        if not self._entries:
            raise IndexError(f"{self.path}: the recording has no frames")
        return max(bisect.bisect_right(self._walls, wall_time) - 1, 0)

    @property
    def times(self) -> tuple[float, float] | None:
        """Wall times of the first and last whole frames."""
        return (self._walls[0], self._walls[-1]) if self._walls else None

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.frame(i)
        self._at_end()

    def snapshots(self, start: int = 0) -> Iterator[Snapshot]:
        """Snapshot per frame from ``start``, models recomputed by build_snapshot against
        the frame before (so the first one replayed from frame 0 has no rates)."""
        prev = self.frame(start - 1).sample if start > 0 else None
        for i in range(start, len(self)):
            f = self.frame(i)
            yield build_snapshot(
                prev, f.sample, seq=i + 1, names=f.names, collect_seconds=f.collect_seconds
            )
            prev = f.sample
        self._at_end()

    def snapshot(self, index: int) -> Snapshot:
        i = index + len(self) if index < 0 else index
        prev = self.frame(i - 1).sample if i > 0 else None
        f = self.frame(i)
        return build_snapshot(
            prev, f.sample, seq=i + 1, names=f.names, collect_seconds=f.collect_seconds
        )

    def _at_end(self) -> None:
        if self._damage is not None:
            raise self._damage
        if self.truncation is not None:
            warnings.warn(self.truncation.message, TruncatedRecording, stacklevel=3)

    # -- decoding --------------------------------------------------------------------------

    def _decode(self, i: int) -> Decoded:
        entry = self._entries[i]
        payload = self._pread(entry.offset + FRAME_HEAD.size, entry.length)
        crc = zlib.crc32(payload)
        if len(payload) != entry.length or crc != entry.crc:
            why = f"CRC32 {crc:08x}, the frame says {entry.crc:08x}"
            raise CorruptFrame(self.path, i, entry.offset, why)
        try:
            body = inflate(payload[PAYLOAD_HEAD.size :])
            decoded = self._decoder.decode(body, keyframe=entry.kind == KEYFRAME)
        except (zlib.error, WireError, CodecError) as e:
            raise CorruptFrame(self.path, i, entry.offset, str(e)) from None
        self._pos = i
        return decoded

    def _pread(self, offset: int, size: int) -> bytes:
        out = b""
        while len(out) < size:
            chunk = os.pread(self._require_fd(), size - len(out), offset + len(out))
            if not chunk:
                break
            out += chunk
        return out

    def _require_fd(self) -> int:
        if self._fd is None:
            raise RecordingError(f"{self.path}: the recording is closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
