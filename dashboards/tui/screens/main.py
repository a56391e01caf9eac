"""The main screen: the status bar, one table row per cgroup, the view line and the filter.

It keeps the ``View`` (sort, filter, tree or flat, folded nodes) and re-renders the table from
the latest frame's rows whenever either changes. Enter (or a click on the selected row) opens
the detail screen of that cgroup.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from dashboards.tui.rows import COLUMNS, CgroupRow, View, cgroup_rows, name_width, view
from dashboards.tui.sources.base import Frame
from dashboards.tui.widgets.status import StatusBar
from dashboards.tui.widgets.table import CgroupTable, path_of

if TYPE_CHECKING:
    from dashboards.tui.app import FrameUpdated


class MainScreen(Screen[None]):
    """The table of cgroups (``spec`` is how it is shown)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "next_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("t", "toggle_tree", "Tree/flat"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="main")
        self.spec = View()
        self.rows: list[CgroupRow] = []
        self.frame_shown: Frame | None = None  # the frame the table shows

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield CgroupTable(id="cgroups")
        yield Static(id="viewline")
        yield Input(placeholder="filter: part of a path, name or kind", id="filter", compact=True)
        yield Footer()

    @property
    def table(self) -> CgroupTable:
        return self.query_one(CgroupTable)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._redraw()

    def on_screen_resume(self) -> None:
        self.show_frame(getattr(self.app, "frame", None))

    def on_frame_updated(self, message: FrameUpdated) -> None:
        self.show_frame(message.frame)

    def show_frame(self, frame: Frame | None) -> None:
        """Show ``frame``'s cgroups (nothing to do when it is the one shown)."""
        if frame is None or frame is self.frame_shown:
            return
        self.frame_shown = frame
        self.rows = cgroup_rows(frame)
        self._redraw()

    def set_view(self, spec: View) -> None:
        self.spec = spec
        self._redraw()

    def _redraw(self) -> None:
        spec = self.spec
        shown = view(self.rows, spec)
        table = self.table
        table.set_headers(spec.sort, spec.reverse, name_width(shown, spec.tree))
        table.show(shown, spec.tree)
        label = next(c.label for c in COLUMNS if c.key == spec.sort)
        line = Text(" tree of all cgroups" if spec.tree else " containers only", style="bold")
        line.append(f" · sort {label} {'▼' if spec.reverse else '▲'}")
        if spec.filter:
            line.append(" · filter ").append(repr(spec.filter), style="bold")
        total = len(self.rows) if spec.tree else sum(r.kind == "container" for r in self.rows)
        line.append(f" · {len(shown)}/{total} shown")
        if spec.folded and spec.tree and not spec.filter:
            line.append(f" · {len(spec.folded)} folded")
        self.query_one("#viewline", Static).update(line)

    # --- sorting, tree, folding -----------------------------------------------------------

    def sort_by(self, key: str) -> None:
        self.set_view(self.spec.sorted_by(key))

    def action_next_sort(self) -> None:
        self.set_view(self.spec.next_sort())

    def action_reverse_sort(self) -> None:
        self.set_view(self.spec.sorted_by(self.spec.sort))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_key.value is not None:
            self.sort_by(event.column_key.value)

    def action_toggle_tree(self) -> None:
        self.set_view(replace(self.spec, tree=not self.spec.tree))

    def on_cgroup_table_fold(self, event: CgroupTable.Fold) -> None:
        event.stop()
        folded = event.path in self.spec.folded
        if event.fold is None or event.fold != folded:
            self.set_view(self.spec.toggled_fold(event.path))

    def fold_all(self, fold: bool) -> None:
        """Fold every node that has children (or unfold all)."""
        nodes = frozenset(r.path for r in self.rows if r.children) if fold else frozenset()
        self.set_view(replace(self.spec, folded=nodes))

    # --- filter ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.spec.filter
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._close_filter()

    def set_filter(self, text: str) -> None:
        if text != self.spec.filter:
            self.set_view(replace(self.spec, filter=text))

    def action_clear_filter(self) -> None:
        self.set_filter("")
        self._close_filter()

    def _close_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        self.table.focus()

    # --- detail ---------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        path = path_of(event.row_key.value)
        opener = getattr(self.app, "open_detail", None)
        if path is not None and callable(opener):
            opener(path)
