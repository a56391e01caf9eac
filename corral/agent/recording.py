"""The agent's recording ([record] / --record PATH): the snapshots it exports, written as they
are polled to a monitor.recording file that `corral top --replay PATH` reads back.

Frames are at least ``interval`` apart (0: every poll). Past ``max_bytes`` the file is
rotated as logrotate would: PATH.{keep-1} -> PATH.{keep}, ..., PATH -> PATH.1, and a new PATH
begins (its own header, so each file replays alone). A PATH left by an earlier run is rotated
away the same way at start, so a restarted service never refuses to start nor overwrites it.
A write that fails (a full disk) stops the recording with one error line; the agent goes on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from corral.agent.config import RecordSection
from monitor.recording import RecordingError, RecordingWriter
from monitor.snapshot import Snapshot

log = logging.getLogger("corral.record")


class AgentRecorder:
    """Writes the snapshots handed to ``write`` (from the poller thread); ``close`` from
    another thread waits for a frame in progress."""

    def __init__(self, section: RecordSection, meta: Mapping[str, Any]) -> None:
        if section.path is None:
            raise ValueError("AgentRecorder needs [record] path")
        self.section = section
        self.path = section.path
        self.meta = dict(meta)
        self._lock = threading.Lock()
        self._last: float | None = None
        self.rotations = 0
        self._rotate_away()
        self._writer: RecordingWriter | None = self._open()

    def _open(self) -> RecordingWriter:
        """Raises RecordingError naming the path."""
        return RecordingWriter(self.path, meta=self.meta)

    def _rotate_away(self) -> None:
        """PATH.N -> PATH.N+1 (the oldest dropped past ``keep``), PATH -> PATH.1."""
        keep = self.section.keep
        if not os.path.exists(self.path):
            return
        try:
            if keep == 0:
                os.unlink(self.path)
                return
            for n in range(keep - 1, 0, -1):
                if os.path.exists(f"{self.path}.{n}"):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot rotate: {e.strerror}") from e

    def write(self, snapshot: Snapshot) -> None:
        """Append ``snapshot`` unless it comes within ``interval`` of the last frame."""
        with self._lock:
            writer = self._writer
            wall = snapshot.sample.wall_time
            if writer is None:
                return
            if self._last is not None and wall - self._last < self.section.interval:
                return
            try:
                writer.write(
                    snapshot.sample, snapshot.names, collect_seconds=snapshot.collect_seconds
                )
                self._last = wall
                limit = self.section.max_bytes
                if limit is not None and writer.bytes_written >= limit:
                    writer.close()
                    self._rotate_away()
                    self._writer = self._open()
                    self.rotations += 1
            except RecordingError as e:
                log.error("recording stopped: %s", e)
                writer.close()
                self._writer = None

    @property
    def frames(self) -> int:
        writer = self._writer
        return writer.frames if writer is not None else 0

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
