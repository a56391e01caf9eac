"""One cgroup in detail (ctop's container view, with limits beside usage): plots over the
frame's history window, its limit files, its processes and the enforcer's actions on it.

Tabs keep it usable at 80x24 (1-4 switch them); on a small terminal the four plots stack
in one scrolled column, on a large one they share a 2x2 grid. The screen takes everything
from the app's latest Frame and updates in place on each FrameUpdated. Processes are read
through the app's Source in a worker thread (psutil walks /proc; a remote source does HTTP),
only while their tab is shown, one read at a time, so input never waits on them; the
plots too are computed only while shown (plotext's drawing is the screen's main cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from dashboards.tui.series import charts, limit_rows, summary
from dashboards.tui.sources.base import Frame, ProcessRow, Source
from dashboards.tui.widgets.audit_list import AuditList, for_cgroup
from dashboards.tui.widgets.plots import Charts
from dashboards.tui.widgets.processes import ProcessTable
from dashboards.tui.widgets.status import StatusBar
from monitor.sample import Limits

if TYPE_CHECKING:
    from dashboards.tui.app import FrameUpdated


class ProcessesRead(Message):
    """A worker read the cgroup's processes: ``rows`` None when the source cannot see
    them; ``error`` says why a read failed."""

    def __init__(self, rows: Sequence[ProcessRow] | None, error: str = "") -> None:
        super().__init__()
        self.rows = rows
        self.error = error


class DetailScreen(Screen[None]):
    """The detail of ``cgroup`` (a path relative to the cgroup2 root, "" for the root)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("1", "tab('plots')", "Plots"),
        Binding("2", "tab('processes')", "Procs"),
        Binding("3", "tab('limits')", "Limits"),
        Binding("4", "tab('audit')", "Audit"),
    ]
    # Screen declares these as ``ClassVar[...] | None``, which mypy takes for instance fields.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide"), (150, "-xwide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]  # noqa: RUF012
    DEFAULT_CSS = """
    DetailScreen #detail-title { height: auto; max-height: 3; padding: 0 1; background: $panel; }
    DetailScreen TabbedContent { height: 1fr; }
    DetailScreen TabPane { padding: 0; height: 1fr; }
    DetailScreen #plots-scroll { height: 1fr; }
    DetailScreen #processes-note { height: auto; padding: 0 1; color: $text-muted; }
    DetailScreen #processes-note.-hidden { display: none; }
    DetailScreen #limits { height: 1fr; }
    DetailScreen #limits-side { display: none; width: 46; height: 1fr; }
    DetailScreen.-xwide.-tall #limits-side { display: block; }
    """

    def __init__(self, cgroup: str) -> None:
        super().__init__()
        self.cgroup = cgroup
        self.frame: Frame | None = None
        self._reading = False

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(id="detail-title")
        with TabbedContent(initial="plots"):
            with TabPane("Plots", id="plots"), Horizontal():
                with VerticalScroll(id="plots-scroll"):
                    yield Charts(charts((), self.cgroup), id="charts")
                # On a large terminal the limits stay in sight beside the plots.
                yield DataTable[str](id="limits-side", cursor_type="none")
            with TabPane("Processes", id="processes"):
                yield Static("reading processes…", id="processes-note")
                yield ProcessTable(id="process-table")
            with TabPane("Limits", id="limits-pane"):
                yield DataTable[str](id="limits", cursor_type="row", show_cursor=False)
            with TabPane("Audit", id="audit"):
                yield AuditList(with_cgroup=False, id="audit-list")
        yield Footer()

    def on_mount(self) -> None:
        for table in self.query("#limits, #limits-side").results(DataTable):
            table.add_columns("file", "value")
        frame = getattr(self.app, "frame", None)
        if isinstance(frame, Frame):
            self.show_frame(frame)
        else:
            self._show_title()

    def on_frame_updated(self, message: FrameUpdated) -> None:
        self.show_frame(message.frame)

    def on_screen_resume(self) -> None:
        """Back from a screen pushed over this one: frames came meanwhile."""
        frame = getattr(self.app, "frame", None)
        if isinstance(frame, Frame):
            self.show_frame(frame)

    def show_frame(self, frame: Frame) -> None:
        """Show ``frame``: title, plots, limits and audit; re-read the processes if shown."""
        if frame is self.frame:
            return
        self.frame = frame
        self._show_title()
        if self._active_tab() == "plots":
            self._show_charts()
        sample = frame.snapshot.sample.cgroups.get(self.cgroup)
        self._show_limits(sample.limits if sample is not None else None)
        self.query_one(AuditList).show(for_cgroup(frame.audit, self.cgroup))
        if self._active_tab() == "processes":
            self.read_processes()

    def _show_charts(self) -> None:
        if self.frame is not None:
            self.query_one(Charts).show(charts(self.frame.history, self.cgroup))

    def _active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def _show_title(self) -> None:
        text = Text()
        name = self._display_name()
        text.append(name, style="bold")
        if self.frame is not None and self.cgroup in self.frame.snapshot.names:
            text.append(f"  {self.frame.snapshot.names[self.cgroup].kind}")
        text.append(f"  /{self.cgroup}")
        if self.frame is not None:
            text.append("\n" + summary(self.frame.snapshot, self.cgroup))
        self.query_one("#detail-title", Static).update(text)

    def _display_name(self) -> str:
        if self.frame is not None:
            for snap in reversed(self.frame.history):
                if self.cgroup in snap.names:
                    return snap.names[self.cgroup].name
        return self.cgroup.rsplit("/", 1)[-1] or "/"

    def _show_limits(self, limits: Limits | None) -> None:
        rows = limit_rows(limits) if limits is not None else [("(gone)", "not in this poll")]
        for table in self.query("#limits, #limits-side").results(DataTable):
            table.clear()
            for file, value in rows:
                table.add_row(file, value)

    def read_processes(self) -> None:
        """Start a read of the processes unless one is under way."""
        source = getattr(self.app, "source", None)
        if source is None:
            self.post_message(ProcessesRead(None, "this view has no source"))
        elif not self._reading:
            self._reading = True
            self._read_in_thread(source)

    @work(thread=True, group="processes", exit_on_error=False)
    def _read_in_thread(self, source: Source) -> None:
        try:
            rows = source.processes(self.cgroup)
        except Exception as error:
            self.post_message(ProcessesRead(None, f"cannot read processes: {error}"))
        else:
            self.post_message(ProcessesRead(rows))

    def on_processes_read(self, message: ProcessesRead) -> None:
        self._reading = False
        note = self.query_one("#processes-note", Static)
        table = self.query_one(ProcessTable)
        if message.rows is None:
            note.update(message.error or "this source cannot see processes (replay)")
            table.show(())
        else:
            count = len(message.rows)
            note.update(f"{count} process{'es' if count != 1 else ''} (s or a header: sort)")
            table.show(message.rows)
        note.remove_class("-hidden")

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "processes":
            self.read_processes()
            self.query_one(ProcessTable).focus()
        elif event.pane.id == "plots":
            self._show_charts()

    def action_tab(self, tab: str) -> None:
        pane = "limits-pane" if tab == "limits" else tab
        self.query_one(TabbedContent).active = pane

    def action_back(self) -> None:
        self.app.pop_screen()
