"""The contract between `corral top` and its data: a ``Source`` hands out ``Frame``s.

The app pulls frames from a background worker (a source may block on the network or on a
poll), so refresh never blocks input. A live source ends its frames with the newest
snapshot; a replay source can also seek back and forth (below's time travel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from enforce.actions import AuditEntry
from monitor.snapshot import Snapshot


class SourceDisconnected(Exception):
    """The source cannot give a frame now (the agent went away, a read failed); the
    message says why. The app shows it as disconnected and keeps asking."""


class CannotSeek(Exception):
    """A live source was asked to move in time."""


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One process of a cgroup (psutil): CPU in cores over the last interval."""

    pid: int
    user: str
    command: str
    rss_bytes: int
    cpu_cores: float


@dataclass(frozen=True, slots=True)
class Frame:
    """What the dashboard shows at one instant.

    ``history`` is oldest first and ends with ``snapshot`` (the plots' window);
    ``audit`` is the enforcer's entries so far, oldest first, bounded by the source;
    ``position`` is "live" or, in a replay, "frame 12/340".
    """

    snapshot: Snapshot
    history: Sequence[Snapshot]
    audit: Sequence[AuditEntry] = field(default_factory=tuple)
    position: str = "live"


class Source(Protocol):
    """``label`` names it in the header ("local", "http://127.0.0.1:9847",
    "replay: demo.corral"). ``interval`` is the seconds between live frames; the app's
    +/- keys set it. ``seekable`` is True for a replay."""

    label: str
    interval: float
    seekable: bool

    def next_frame(self) -> Frame:
        """The next frame, waiting up to ``interval`` for it; raises SourceDisconnected."""
        ...

    def seek(self, frames: int) -> Frame:
        """Move ``frames`` back (negative) or forward and return that frame; CannotSeek on
        a live source. A replay stops at its first and last frame."""
        ...

    def processes(self, cgroup: str) -> Sequence[ProcessRow] | None:
        """The cgroup's processes now, or None where the source cannot see them."""
        ...

    def close(self) -> None: ...
