"""The recording file format: a header, then self-delimiting frames.

    file    = MAGIC version:u16 header_len:u32 header_crc:u32 header_json  frame*
    frame   = payload_len:u32 payload_crc:u32 payload          (CRC32 of the payload)
    payload = kind:u8 wall_time:f64 monotonic:f64 collect_seconds:f64 deflate(body)

Integers are little-endian. ``kind`` is KEYFRAME (the body stands alone) or DELTA (the body
refers to the frame before it; see frames.py). The uncompressed prefix lets a reader index a
recording by time without inflating it. Each frame is written with one write(2), so a writer
killed mid-frame leaves whole frames and at most one partial frame at the end: a reader
replays up to the last whole frame and says how many bytes were cut.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

MAGIC = b"\x89CORRAL\x1a"  # not text, not a Prometheus exposition, not JSON
FORMAT_VERSION = 1
KEYFRAME, DELTA = ord("K"), ord("D")
FRAME_KINDS = (KEYFRAME, DELTA)

FILE_HEAD = struct.Struct("<8sHII")  # magic, version, header length, header CRC32
FRAME_HEAD = struct.Struct("<II")  # payload length, payload CRC32
PAYLOAD_HEAD = struct.Struct("<Bddd")  # kind, wall_time, monotonic, collect_seconds
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 1 << 30  # a longer length field is damage, not a frame


class RecordingError(Exception):
    """A recording cannot be read; the message names the file and what is wrong."""


class NotARecording(RecordingError):
    pass


class NewerFormat(RecordingError):
    def __init__(self, path: str, version: int) -> None:
        self.version = version
        super().__init__(
            f"{path}: recording format version {version} is newer than this corral reads "
            f"(format version {FORMAT_VERSION}); replay it with a newer corral"
        )


class CorruptFrame(RecordingError):
    """A frame failed its CRC or does not parse: replay stops before it."""

    def __init__(self, path: str, frame: int, offset: int, why: str) -> None:
        self.frame, self.offset = frame, offset
        super().__init__(
            f"{path}: frame {frame} at byte offset {offset} is corrupt ({why}); "
            f"the {frame} frames before it are readable"
        )


class TruncatedRecording(UserWarning):
    """Issued when a replay reaches the cut at the end of a truncated recording."""


@dataclass(frozen=True, slots=True)
class Truncation:
    """The end of a recording whose last frame is incomplete (the writer was killed)."""

    path: str
    frames: int  # whole frames before the cut
    offset: int  # where the partial frame starts
    have: int  # its bytes present
    need: int | None  # its full length; None when even its 8-byte length field is cut

    @property
    def bytes_cut(self) -> int:
        """Bytes missing from the partial frame (a lower bound when ``need`` is None)."""
        need = self.need if self.need is not None else FRAME_HEAD.size + PAYLOAD_HEAD.size
        return need - self.have

    @property
    def message(self) -> str:
        cut = f"{'' if self.need is not None else 'at least '}{self.bytes_cut} bytes cut"
        return (
            f"{self.path}: recording truncated: the frame at byte offset {self.offset} is "
            f"incomplete ({self.have} bytes present, {cut}); replayed the {self.frames} "
            "whole frames before it"
        )


def host_info() -> dict[str, Any]:
    """What the header says about where and when the recording was made."""
    try:
        version = metadata.version("corral")
    except metadata.PackageNotFoundError:
        version = "unknown"
    uname = os.uname()
    return {
        "created": time.time(),
        "host": uname.nodename,
        "kernel": uname.release,
        "uname": " ".join(uname),
        "corral_version": version,
    }


def encode_header(meta: dict[str, Any]) -> bytes:
    data = json.dumps(meta, sort_keys=True).encode()
    return FILE_HEAD.pack(MAGIC, FORMAT_VERSION, len(data), zlib.crc32(data)) + data


def decode_file_head(path: str, head: bytes) -> tuple[int, int, int]:
    """(version, header length, header CRC) from the first FILE_HEAD.size bytes."""
    if not head:
        raise NotARecording(f"{path}: empty file, not a corral recording")
    if len(head) < FILE_HEAD.size or not head.startswith(MAGIC):
        shown = head[: len(MAGIC)]
        if head.startswith(MAGIC):
            raise RecordingError(f"{path}: recording truncated inside its file header")
        raise NotARecording(
            f"{path}: not a corral recording (starts with {shown!r}, a recording with {MAGIC!r})"
        )
    _, version, size, crc = FILE_HEAD.unpack(head)
    if version > FORMAT_VERSION:
        raise NewerFormat(path, version)
    if version < 1 or size > MAX_HEADER:
        raise NotARecording(f"{path}: not a corral recording (format version {version})")
    return version, size, crc


def decode_header(path: str, data: bytes, size: int, crc: int) -> dict[str, Any]:
    if len(data) < size:
        raise RecordingError(f"{path}: recording truncated inside its header")
    if zlib.crc32(data) != crc:
        raise RecordingError(f"{path}: the recording's header is corrupt (CRC32 mismatch)")
    try:
        meta = json.loads(data)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise RecordingError(f"{path}: the recording's header is not a JSON object")
    return meta


def encode_frame(kind: int, wall: float, mono: float, collect: float, body: bytes) -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw: the frame's CRC32 checks it
    payload = PAYLOAD_HEAD.pack(kind, wall, mono, collect) + deflate.compress(body)
    payload += deflate.flush()
    return FRAME_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def inflate(data: bytes) -> bytes:
    """The body of a frame's payload (after PAYLOAD_HEAD); zlib.error when it is damaged."""
    inflater = zlib.decompressobj(-15)
    body = inflater.decompress(data) + inflater.flush()
    if not inflater.eof or inflater.unused_data:
        raise zlib.error("the compressed body is incomplete or has trailing bytes")
    return body
