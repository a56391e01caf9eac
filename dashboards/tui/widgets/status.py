"""The status bar at the top of every screen: the source, where in time the frame is, how
often it refreshes, paused or not; below it, while the source is down, the red
"disconnected: <why> — retrying" banner.

The app pushes a new ``Status`` to every StatusBar when any of it changes (once a frame at
most); a StatusBar mounted later takes the app's current one (``app.status``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static


@dataclass(frozen=True, slots=True)
class Status:
    """What the status bar says. ``wall_time`` is the shown snapshot's (Unix s);
    ``disconnected`` is why the source is down, None while it answers."""

    source: str = ""
    position: str = "live"
    wall_time: float | None = None
    cgroups: int = 0
    interval: float = 1.0
    paused: bool = False
    disconnected: str | None = None


def format_interval(seconds: float) -> str:
    """ "500ms", "1s", "2.5s", "1m"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:g}s"


def status_line(status: Status) -> Text:
    """One line, most important first (it is cropped on a narrow terminal). The snapshot's
    local time is left out when the position already says it (a replay's does, in UTC)."""
    when = "--:--:--"
    if status.wall_time is not None:
        when = time.strftime("%H:%M:%S", time.localtime(status.wall_time))
    text = Text(" corral top ", style="bold")
    parts = [status.source, status.position]
    if status.paused:
        parts.append("PAUSED")
    if when not in status.position:
        parts.append(when)
    parts += [f"every {format_interval(status.interval)}", f"{status.cgroups} cgroups"]
    for part in parts:
        style = "bold reverse" if part == "PAUSED" else ""
        text.append(" │ ", style="dim").append(part, style=style)
    return text


class StatusBar(Vertical):
    """The status line and, while disconnected, the banner under it."""

    status: reactive[Status] = reactive(Status, always_update=False, init=False)

    def compose(self) -> ComposeResult:
        yield Static(id="status-line")
        yield Static(id="banner")

    def on_mount(self) -> None:
        current = getattr(self.app, "status", None)
        self.status = current if isinstance(current, Status) else Status()
        self.watch_status(self.status)

    def watch_status(self, status: Status) -> None:
        # The app sets every screen's bar on each frame, and a frame can arrive between a
        # screen's push and its bar's compose: on_mount shows the status then.
        if not self.children:
            return
        self.query_one("#status-line", Static).update(status_line(status))
        banner = self.query_one("#banner", Static)
        if status.disconnected is None:
            banner.display = False
        else:
            banner.update(f"disconnected: {status.disconnected} — retrying")
            banner.display = True
