"""The recording loop: poll on a fixed grid of ticks, write each poll as a frame.

Ticks are ``start + k * interval``; a poll that overruns skips the ticks it missed rather
than polling back to back. With a duration, the last tick is the one at ``duration`` (so
``--duration 10 --interval 1`` records 11 frames spanning 10 s: 10 intervals of rates).
Stopping (a signal) lets the poll in progress finish and its frame be written first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from monitor.recording.writer import RecordingWriter
from monitor.snapshot import Snapshot


class Poller(Protocol):
    def poll(self) -> Snapshot: ...


@dataclass(frozen=True, slots=True)
class Progress:
    frames: int
    cgroups: int  # in the last frame
    bytes_written: int
    elapsed: float
    remaining: float | None  # seconds until the last tick; None without a duration


def record(
    poller: Poller,
    writer: RecordingWriter,
    *,
    interval: float,
    duration: float | None = None,
    wait: Callable[[float], bool],
    progress: Callable[[Progress], None] = lambda p: None,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """Record until ``duration`` has passed or ``wait(seconds)`` (the sleep between polls)
    returns True, meaning "stop". Returns the final progress."""
    if not interval > 0 or not math.isfinite(interval):
        raise ValueError(f"interval {interval!r}: expected seconds > 0")
    if duration is not None and not duration >= 0:
        raise ValueError(f"duration {duration!r}: expected seconds >= 0")
    start = clock()
    last_tick = math.floor(duration / interval + 1e-9) if duration is not None else None
    tick = 0
    state = Progress(0, 0, writer.bytes_written, 0.0, duration)
    while True:
        snap = poller.poll()
        writer.write(snap.sample, snap.names, collect_seconds=snap.collect_seconds)
        now = clock()
        remaining = None if duration is None else max(start + duration - now, 0.0)
        state = Progress(
            writer.frames, len(snap.sample.cgroups), writer.bytes_written, now - start, remaining
        )
        progress(state)
        tick = max(tick + 1, math.floor((now - start) / interval) + 1)
        if last_tick is not None and tick > last_tick:
            return state
        if wait(max(start + tick * interval - clock(), 0.0)):
            return state
