"""`corral top`: the Textual app. It shows Frames from a Source and never blocks on it.

Worker threads are the only callers of the source (``next_frame``, ``seek``): it posts each
frame to the app as a message, so a slow poll or a dead agent never stalls input. The app
keeps the latest frame in ``app.frame`` and tells the active screen with ``FrameUpdated``;
screens that were hidden read ``app.frame`` when they come back. A SourceDisconnected shows
as a banner while the worker keeps asking. Space pauses: live frames keep arriving but are
not shown (the newest is shown on resume); a replay stops playing. A replay's step keys
(←/→, [ ], Home/End) call ``source.seek`` from a second worker thread, so a step answers at
once instead of after the play's wait (ReplaySource locks seek against play).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input

from dashboards.tui.rows import COLUMNS
from dashboards.tui.screens.help import HelpScreen
from dashboards.tui.screens.main import MainScreen
from dashboards.tui.sources.base import CannotSeek, Frame, Source, SourceDisconnected
from dashboards.tui.widgets.status import Status, StatusBar, format_interval

# The refresh intervals +/- step through (seconds).
INTERVALS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
JUMP = 10  # frames [ and ] move a replay
FAR = 1 << 30  # frames Home/End move a replay (it stops at its ends)
RETRY_MAX = 5.0  # seconds at most between two tries of a disconnected source


class FrameUpdated(Message):
    """Posted to the active screen when the app shows a new frame (``app.frame``)."""

    def __init__(self, frame: Frame) -> None:
        super().__init__()
        self.frame = frame


class CorralCommands(Provider):
    """The command palette's corral commands: sort, filter, views, screens, replay moves."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        if not isinstance(app, CorralTop):
            return []
        main = app.main
        commands: list[tuple[str, Callable[[], object], str]] = [
            (f"Sort by {c.label}", partial(main.sort_by, c.key), "again reverses the order")
            for c in COLUMNS
        ]
        commands += [
            ("Filter…", app.action_filter, "show cgroups whose path, name or kind has a text"),
            ("Clear filter", main.action_clear_filter, "show every cgroup again"),
            ("Toggle tree / flat", main.action_toggle_tree, "tree of all cgroups or containers"),
            ("Fold all", partial(main.fold_all, True), "fold every node of the tree"),
            ("Unfold all", partial(main.fold_all, False), "open every node of the tree"),
            ("Open enforcer screen", app.action_enforcer, "the enforcer's action log"),
            ("Pause / resume", app.action_pause, "stop or restart showing new frames"),
            ("Slower refresh", partial(app.action_interval, 1), "a longer interval (+)"),
            ("Faster refresh", partial(app.action_interval, -1), "a shorter interval (-)"),
            ("Help", app.action_help, "keys and columns"),
        ]
        if app.source.seekable:
            commands += [
                ("Replay: first frame", partial(app.action_seek, -FAR), "Home"),
                ("Replay: last frame", partial(app.action_seek, FAR), "End"),
            ]
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class CorralTop(App[None]):
    """The dashboard over ``source``; it closes the source when it exits."""

    CSS_PATH = "corral.tcss"
    TITLE = "corral top"
    COMMANDS = App.COMMANDS | {CorralCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("space", "pause", "Pause"),
        Binding("plus,equals_sign", "interval(1)", "Slower", show=False),
        Binding("minus", "interval(-1)", "Faster", show=False),
        Binding("e", "enforcer", "Enforcer"),
        # Replay keys come first (priority) so the table's own arrows do not take them;
        # check_action turns them off for a live source or while typing a filter.
        Binding("left", "seek(-1)", "Back", priority=True, show=False),
        Binding("right", "seek(1)", "Forward", priority=True, show=False),
        Binding("left_square_bracket", f"seek({-JUMP})", "Back 10", priority=True, show=False),
        Binding("right_square_bracket", f"seek({JUMP})", "Fwd 10", priority=True, show=False),
        Binding("home", f"seek({-FAR})", "First", priority=True, show=False),
        Binding("end", f"seek({FAR})", "Last", priority=True, show=False),
    ]

    def __init__(self, source: Source, *, theme: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.frame: Frame | None = None
        self.paused = False
        self.disconnected: str | None = None
        self.main = MainScreen()
        self._pending: Frame | None = None  # the newest live frame that came while paused
        self._seeks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._playing = threading.Event()  # set while not paused
        self._playing.set()
        if theme is not None:
            self.theme = theme

    # --- the worker: the only caller of the source ----------------------------------------

    class FrameArrived(Message):
        """From the worker: a frame (``seeked``: the answer to a step key)."""

        def __init__(self, frame: Frame, seeked: bool) -> None:
            super().__init__()
            self.frame = frame
            self.seeked = seeked

    class Disconnected(Message):
        """From the worker: the source could not give a frame, and why."""

        def __init__(self, why: str) -> None:
            super().__init__()
            self.why = why

    class Refused(Message):
        """From the worker: the source refused a move in time (CannotSeek)."""

        def __init__(self, why: str) -> None:
            super().__init__()
            self.why = why

    @work(thread=True, exclusive=True, name="frames", group="play")
    def _pull_frames(self) -> None:
        """Ask the source for frames until the app stops; a down source is asked again
        after its interval (at most RETRY_MAX seconds), never in a tight loop. A paused
        replay is not asked at all (it would play on)."""
        while not self._stop.is_set():
            if self.source.seekable and not self._playing.wait(0.2):
                continue
            try:
                frame = self.source.next_frame()
            except SourceDisconnected as e:
                self.post_message(self.Disconnected(str(e) or type(e).__name__))
                self._stop.wait(min(max(self.source.interval, 0.05), RETRY_MAX))
                continue
            self.post_message(self.FrameArrived(frame, seeked=False))

    @work(thread=True, exclusive=True, name="seeks", group="seek")
    def _seek_frames(self) -> None:
        """Answer the step keys of a replay. Its own thread, so a step is shown at once
        rather than after the play's wait (a replay source locks seek against play)."""
        while not self._stop.is_set():
            steps = self._queued_seeks()
            if steps is None:
                continue
            try:
                frame = self.source.seek(steps)
            except SourceDisconnected as e:
                self.post_message(self.Disconnected(str(e) or type(e).__name__))
            except CannotSeek as e:
                self.post_message(self.Refused(str(e) or "this source cannot move in time"))
            else:
                self.post_message(self.FrameArrived(frame, seeked=True))

    def _queued_seeks(self) -> int | None:
        """The sum of the queued moves (several key presses make one seek), or None after
        a fifth of a second without any (to notice the app stopping)."""
        try:
            steps = self._seeks.get(timeout=0.2)
        except queue.Empty:
            return None
        while True:
            try:
                steps += self._seeks.get_nowait()
            except queue.Empty:
                return steps

    def on_mount(self) -> None:
        self.push_screen(self.main)
        self._pull_frames()
        if self.source.seekable:
            self._seek_frames()

    def on_unmount(self) -> None:
        self._stop.set()
        self._playing.set()
        self.source.close()

    def on_corral_top_frame_arrived(self, message: FrameArrived) -> None:
        # A replay frame that was on its way when pause was pressed is shown: the replay
        # is then where the screen says, and the step keys move from there.
        if self.paused and not message.seeked and not self.source.seekable:
            self._pending = message.frame
        else:
            self._show(message.frame)
        if self.disconnected is not None:
            self.disconnected = None
            self._update_status()

    def on_corral_top_disconnected(self, message: Disconnected) -> None:
        self.disconnected = message.why
        self._update_status()

    def on_corral_top_refused(self, message: Refused) -> None:
        self.notify(message.why, severity="warning")

    def _show(self, frame: Frame) -> None:
        self.frame = frame
        self._pending = None
        self._update_status()
        # The active screen, and those under it that a modal one (help) leaves visible.
        for screen in reversed(self.screen_stack):
            screen.post_message(FrameUpdated(frame))
            if not isinstance(screen, ModalScreen):
                break

    # --- status ---------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        frame = self.frame
        return Status(
            source=self.source.label,
            position=frame.position if frame else "waiting for the first frame",
            wall_time=frame.snapshot.sample.wall_time if frame else None,
            cgroups=len(frame.snapshot.sample.cgroups) if frame else 0,
            interval=self.source.interval,
            paused=self.paused,
            disconnected=self.disconnected,
        )

    def _update_status(self) -> None:
        status = self.status
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.status = status

    # --- actions --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The replay keys only for a seekable source, and never while typing in an input
        (the keys then go to the input or the table)."""
        if action == "seek":
            return self.source.seekable and not isinstance(self.focused, Input)
        return True

    def action_seek(self, frames: int) -> None:
        self._seeks.put(frames)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            self._playing.clear()
        else:
            self._playing.set()
        if not self.paused and self._pending is not None:
            self._show(self._pending)
        self._update_status()

    def action_interval(self, direction: int) -> None:
        """The next longer (1) or shorter (-1) interval of INTERVALS."""
        now = self.source.interval
        if direction > 0:
            choice = next((i for i in INTERVALS if i > now), INTERVALS[-1])
        else:
            choice = next((i for i in reversed(INTERVALS) if i < now), INTERVALS[0])
        self.source.interval = choice
        self._update_status()
        self.notify(f"refresh every {format_interval(choice)}", timeout=1.5)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        if self.screen is not self.main:
            self.switch_to_main()
        self.main.action_filter()

    def switch_to_main(self) -> None:
        while self.screen is not self.main and len(self.screen_stack) > 2:
            self.pop_screen()

    def open_detail(self, cgroup: str) -> None:
        """Push D2's detail screen for ``cgroup`` (imported here: it is optional)."""
        from dashboards.tui.screens.detail import DetailScreen

        self.push_screen(DetailScreen(cgroup))

    def action_enforcer(self) -> None:
        from dashboards.tui.screens.enforcer import EnforcerScreen

        if not isinstance(self.screen, EnforcerScreen):
            self.push_screen(EnforcerScreen())
