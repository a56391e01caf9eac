"""ReplaySource: `corral top --replay FILE`, a recording (monitor.recording) played back
with time travel, as below does: each frame's models are rebuilt from the recorded sample
and the one before it (build_snapshot), so the replay shows what the live dashboard showed.

Playing moves a cursor through recording time: each ``next_frame`` waits ``interval`` seconds
and moves ``interval * speed`` seconds on, showing the frame current then (a recording made
every 0.5 s played at interval 1 and speed 1 shows every other frame, in real time). ``seek``
steps whole frames back or forth; both stop at the first and the last frame. Play and seek
may be called from two threads (the app answers step keys at once, while play waits).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from dashboards.tui.sources.base import Frame, ProcessRow, SourceDisconnected
from monitor.recording import Recording, RecordingError
from monitor.snapshot import Snapshot

CACHE_SLACK = 64  # snapshots kept beyond the window, so stepping back rebuilds few


class ReplaySource:
    """Frames of the recording at ``path``, the plots' window the ``history_seconds`` of
    recording time before the current frame. Raises RecordingError when the file cannot be
    opened or has no frames."""

    seekable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        speed: float = 1.0,
        *,
        interval: float = 1.0,
        history_seconds: float = 300.0,
    ) -> None:
        if speed <= 0 or interval <= 0 or history_seconds <= 0:
            raise ValueError(
                f"speed {speed!r}, interval {interval!r}, history_seconds {history_seconds!r}:"
                " expected numbers > 0"
            )
        self.recording = Recording(path)
        if len(self.recording) == 0:
            self.recording.close()
            raise RecordingError(f"{os.fspath(path)}: the recording has no whole frame")
        self.label = f"replay: {os.path.basename(os.fspath(path))}"
        self.interval = interval
        self.speed = speed
        self.history_seconds = history_seconds
        self.index = 0  # the frame shown
        self._cursor = self._wall(0)  # recording time the play has reached
        self._started = False
        self._seeks = 0  # seeks so far: a play step waiting through one does not move
        self._lock = threading.Lock()  # seek (UI keys) and play may come from two workers
        self._closed = threading.Event()
        self._cache: dict[int, Snapshot] = {}

    def __len__(self) -> int:
        return len(self.recording)

    def next_frame(self) -> Frame:
        """The first frame at once; then, after ``interval``, the frame ``interval * speed``
        seconds of recording time later (the last frame again once the end is reached).
        A seek made meanwhile wins: this call then returns the frame it moved to, unmoved
        (the app may show a play frame that was on its way when a step key was pressed)."""
        seeks = self._seeks
        if self._started and self._closed.wait(self.interval):
            raise SourceDisconnected(f"{self.label}: the source was closed")
        with self._lock:
            if self._started and seeks == self._seeks:
                last = len(self.recording) - 1
                self._cursor = min(self._cursor + self.interval * self.speed, self._wall(last))
                self.index = max(self.index, self.recording.index_at(self._cursor))
            self._started = True
            return self._frame()

    def seek(self, frames: int) -> Frame:
        """Step ``frames`` whole frames (negative: back), stopping at either end; playing
        goes on from there."""
        with self._lock:
            self.index = min(max(self.index + frames, 0), len(self.recording) - 1)
            self._seeks += 1
            self._cursor = self._wall(self.index)
            self._started = True
            return self._frame()

    def processes(self, cgroup: str) -> Sequence[ProcessRow] | None:
        return None  # a recording holds no processes

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self.recording.close()

    def position(self, index: int) -> str:
        """ "frame 12/340 2026-11-29 00:51:02" (1-based; the frame's wall time in UTC)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._wall(index)))
        return f"frame {index + 1}/{len(self.recording)} {stamp}"

    def _wall(self, index: int) -> float:
        return self.recording.info(index).wall_time

    def _frame(self) -> Frame:
        i = self.index
        since = self._wall(i) - self.history_seconds
        first = self.recording.index_at(since)
        if self._wall(first) < since:
            first += 1
        try:
            window = tuple(self._snapshot(j) for j in range(min(first, i), i + 1))
        except RecordingError as e:  # a corrupt frame: replay cannot show this instant
            raise SourceDisconnected(f"{self.label}: {e}") from None
        for j in [j for j in self._cache if not first - CACHE_SLACK <= j <= i + CACHE_SLACK]:
            del self._cache[j]
        return Frame(window[-1], window, (), self.position(i))

    def _snapshot(self, index: int) -> Snapshot:
        found = self._cache.get(index)
        if found is None:
            found = self._cache[index] = self.recording.snapshot(index)
        return found
