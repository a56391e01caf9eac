"""A cgroup's processes (psutil rows from ``Source.processes``) as a sortable table.

Sorting is by column: ``s`` or a header click picks a column, the same again reverses it.
Numbers sort biggest first (the usual question is "who uses the most"), text A to Z. The
cursor stays on the same pid across refreshes, as htop keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from dashboards.tui.series import cores, iec_bytes
from dashboards.tui.sources.base import ProcessRow

# column key -> (header, sort key, numbers sort biggest first)
COLUMNS: dict[str, tuple[str, Callable[[ProcessRow], Any], bool]] = {
    "pid": ("PID", lambda p: p.pid, False),
    "user": ("USER", lambda p: p.user, False),
    "rss": ("RSS", lambda p: p.rss_bytes, True),
    "cpu": ("CPU", lambda p: p.cpu_cores, True),
    "command": ("COMMAND", lambda p: p.command, False),
}
DEFAULT_SORT = "cpu"


def sort_processes(
    rows: Sequence[ProcessRow], column: str, reversed_: bool = False
) -> list[ProcessRow]:
    """``rows`` ordered by ``column`` (its natural order, or the opposite when
    ``reversed_``); ties by pid, so the order is the same on every refresh."""
    _check_column(column)
    _, key, descending = COLUMNS[column]
    by_pid = sorted(rows, key=lambda p: p.pid)
    return sorted(by_pid, key=key, reverse=descending != reversed_)


def _check_column(column: str) -> None:
    if column not in COLUMNS:
        raise ValueError(f"process sort column {column!r}: expected one of {', '.join(COLUMNS)}")


def next_sort(column: str, reversed_: bool, chosen: str) -> tuple[str, bool]:
    """The sort after choosing ``chosen``: the same column again flips the order, another
    column starts in its natural order."""
    return (column, not reversed_) if chosen == column else (chosen, False)


def process_cells(row: ProcessRow) -> tuple[str | Text, ...]:
    return (
        Text(str(row.pid), justify="right"),
        row.user,
        Text(iec_bytes(row.rss_bytes), justify="right"),
        Text(cores(row.cpu_cores), justify="right"),
        row.command,
    )


class ProcessTable(DataTable[str | Text]):
    """The processes, sorted by ``sort_column`` (``sort_reversed``: the other way)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("s", "cycle_sort", "Sort")]
    DEFAULT_CSS = """
    ProcessTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.sort_column = DEFAULT_SORT
        self.sort_reversed = False
        self.rows_shown: list[ProcessRow] = []
        self._raw: Sequence[ProcessRow] = ()

    def on_mount(self) -> None:
        for key in COLUMNS:
            self.add_column(self._header(key), key=key)

    def _header(self, key: str) -> str:
        name = COLUMNS[key][0]
        if key != self.sort_column:
            return name
        descending = COLUMNS[key][2] != self.sort_reversed
        return f"{name} {'▼' if descending else '▲'}"

    def show(self, rows: Sequence[ProcessRow]) -> None:
        """Replace the rows, sorted, keeping the cursor on the same pid."""
        self._raw = rows
        self._redraw()

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; the current column again reverses the order."""
        if column not in COLUMNS:
            raise ValueError(
                f"process sort column {column!r}: expected one of {', '.join(COLUMNS)}"
            )
        self.sort_column, self.sort_reversed = next_sort(
            self.sort_column, self.sort_reversed, column
        )
        for key, column_ in self.columns.items():
            column_.label = Text(self._header(str(key.value)))
        self._redraw()

    def action_cycle_sort(self) -> None:
        keys = list(COLUMNS)
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)])

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def _redraw(self) -> None:
        current = self.rows_shown[self.cursor_row].pid if self._has_cursor_row() else None
        self.rows_shown = sort_processes(self._raw, self.sort_column, self.sort_reversed)
        self.clear()
        for row in self.rows_shown:
            self.add_row(*process_cells(row), key=str(row.pid))
        pids = [p.pid for p in self.rows_shown]
        if current in pids:
            self.move_cursor(row=pids.index(current), animate=False)

    def _has_cursor_row(self) -> bool:
        return 0 <= self.cursor_row < len(self.rows_shown)
