"""RecordingWriter: HostSamples (and their names) appended to a recording file.

Every ``keyframe_every``-th frame is a keyframe, so a reader seeking to any frame decodes at
most that many frames; the rest are deltas against the frame before. Each frame reaches the
file in one write(2) as soon as it is coded, so a writer killed at any moment leaves a file
that replays up to its last whole frame.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from monitor.recording.codec import SampleCodec
from monitor.recording.format import (
    DELTA,
    FORMAT_VERSION,
    KEYFRAME,
    RecordingError,
    encode_frame,
    encode_header,
    host_info,
)
from monitor.recording.frames import FrameEncoder
from monitor.sample import HostSample
from monitor.snapshot import CgroupName

DEFAULT_KEYFRAME_EVERY = 60


class RecordingWriter:
    """Writes ``path``; refuses an existing file unless ``overwrite``. ``meta`` adds to the
    header (the cgroup root, interval, ... of the recording)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        meta: Mapping[str, Any] | None = None,
        keyframe_every: int = DEFAULT_KEYFRAME_EVERY,
        overwrite: bool = False,
    ) -> None:
        if keyframe_every < 1:
            raise ValueError(f"keyframe_every={keyframe_every}: give 1 or more")
        self.path = os.fspath(path)
        self.keyframe_every = keyframe_every
        codec = SampleCodec()
        self.header: dict[str, Any] = {
            **host_info(),
            **(meta or {}),
            "format_version": FORMAT_VERSION,
            "keyframe_every": keyframe_every,
            "compression": "deflate",
            "schema": codec.schema,
        }
        self._encoder = FrameEncoder(codec)
        try:
            header = encode_header(self.header)
        except (TypeError, ValueError) as e:
            raise RecordingError(f"{self.path}: the header cannot hold {meta!r}: {e}") from None
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= os.O_TRUNC if overwrite else os.O_EXCL
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise RecordingError(
                f"{self.path}: already exists; remove it or choose another file"
            ) from None
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot create: {e.strerror}") from e
        self.frames = 0
        self.cgroup_samples = 0  # cgroups summed over frames, for bytes per cgroup-sample
        self.bytes_written = 0
        self._write(header)
        self.header_bytes = self.bytes_written

    def write(
        self,
        sample: HostSample,
        names: Mapping[str, CgroupName] | None = None,
        *,
        collect_seconds: float = 0.0,
    ) -> int:
        """Append one frame; returns its size in bytes."""
        if self._fd is None:
            raise RecordingError(f"{self.path}: the recording is closed")
        keyframe = self.frames % self.keyframe_every == 0
        body = self._encoder.encode(sample.cgroups, sample.errors, names or {}, keyframe=keyframe)
        frame = encode_frame(
            KEYFRAME if keyframe else DELTA,
            sample.wall_time,
            sample.monotonic,
            collect_seconds,
            body,
        )
        self._write(frame)
        self.frames += 1
        self.cgroup_samples += len(sample.cgroups)
        return len(frame)

    @property
    def bytes_per_cgroup_sample(self) -> float | None:
        """Frame bytes (the header aside) per cgroup per sample so far."""
        if not self.cgroup_samples:
            return None
        return (self.bytes_written - self.header_bytes) / self.cgroup_samples

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            try:
                done = os.write(self._fd, view)
            except OSError as e:
                raise RecordingError(f"{self.path}: write failed: {e.strerror}") from e
            view = view[done:]
        self.bytes_written += len(data)

    def close(self) -> None:
        """fsync and close; the frames are already in the file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
