"""Recordings: raw HostSamples (and the names of their cgroups) in a compact, compressed,
versioned file, replayed as Snapshots with their models recomputed (build_snapshot), so a
recording can feed the dashboard or be re-simulated under any policy.

    with RecordingWriter("host.rec", meta={"interval_seconds": 1.0}) as w:
        w.write(sample, names, collect_seconds=0.01)
    for snapshot in replay("host.rec"):
        ...
    Replayer("host.rec").poll()  # the next Snapshot, as the live collector's poll() gives

The file format is described in format.py (framing) and frames.py (frame bodies).
"""

from monitor.recording.format import (
    FORMAT_VERSION,
    CorruptFrame,
    NewerFormat,
    NotARecording,
    RecordingError,
    TruncatedRecording,
    Truncation,
)
from monitor.recording.reader import Frame, FrameInfo, Recording
from monitor.recording.replay import RecordingEnded, Replayer, replay
from monitor.recording.writer import RecordingWriter

__all__ = [
    "FORMAT_VERSION",
    "CorruptFrame",
    "Frame",
    "FrameInfo",
    "NewerFormat",
    "NotARecording",
    "Recording",
    "RecordingEnded",
    "RecordingError",
    "RecordingWriter",
    "Replayer",
    "TruncatedRecording",
    "Truncation",
    "replay",
]
