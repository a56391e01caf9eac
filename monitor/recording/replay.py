"""Replaying a recording: as an iterator of Snapshots, or as a poller.

Either way each Snapshot is rebuilt by build_snapshot from the recorded HostSample and the
one before it, so the models (rates, ratios) are recomputed by today's code: a recording
can feed the dashboard, or the enforcer's simulator under any policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from monitor.recording.format import RecordingError
from monitor.recording.reader import Recording
from monitor.snapshot import Snapshot


def replay(
    path: str | os.PathLike[str], *, start: int = 0, since: float | None = None
) -> Iterator[Snapshot]:
    """Snapshots of the recording at ``path``, from frame ``start`` or from the frame current
    at wall time ``since``. A truncated recording replays up to its cut, then warns
    (TruncatedRecording); a corrupt frame raises CorruptFrame when replay reaches it."""
    with Recording(path) as rec:
        if since is not None and len(rec):
            start = rec.index_at(since)
        yield from rec.snapshots(start)


class RecordingEnded(RecordingError):
    """poll() after the last frame of a recording."""


class Replayer:
    """A recording as a poller (the agent's Poller protocol): each ``poll()`` returns the
    next frame's Snapshot, with its seq and collect_seconds as recorded; after the last
    frame it raises RecordingEnded, naming the file and the frame count."""

    def __init__(self, path: str | os.PathLike[str], *, start: int = 0) -> None:
        self.recording = Recording(path)
        if not 0 <= start <= len(self.recording):
            self.recording.close()
            raise RecordingError(
                f"{self.recording.path}: start frame {start} outside 0..{len(self.recording)}"
            )
        self.position = start  # the frame the next poll() returns

    def poll(self) -> Snapshot:
        rec = self.recording
        if self.position >= len(rec):
            why = f", then {rec.truncation.message}" if rec.truncation else ""
            raise RecordingEnded(f"{rec.path}: replayed all {len(rec)} frames{why}")
        snapshot = rec.snapshot(self.position)
        self.position += 1
        return snapshot

    def close(self) -> None:
        self.recording.close()
