"""The main table of cgroups: a DataTable updated in place from ``rows.Shown`` lists.

Each frame changes figures, rarely the set or order of rows: when the order is unchanged,
only the cells that changed are rewritten (``update_cell``); otherwise the rows are replaced
and the cursor stays on the same cgroup. Widgets are never rebuilt per frame, so a refresh
costs little CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from dashboards.tui.rows import COLUMNS, Cell, Shown, cells

ROOT_KEY = "/"  # the root cgroup's path is "", which is no good as a row key


def row_key(path: str) -> str:
    return path or ROOT_KEY


def path_of(key: str | None) -> str | None:
    if key is None:
        return None
    return "" if key == ROOT_KEY else key


class CgroupTable(DataTable[Cell]):
    """One row per cgroup. In a tree, left folds an open node and right opens a folded one
    (elsewhere they scroll sideways, as in a plain DataTable); f toggles a node."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "fold_or_scroll(True)", "Fold", show=False),
        Binding("right", "fold_or_scroll(False)", "Unfold", show=False),
        Binding("f", "fold(None)", "Fold", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("home", "scroll_top", "Top", show=False),
        Binding("end", "scroll_bottom", "Bottom", show=False),
    ]

    class Fold(Message):
        """Fold (True), unfold (False) or toggle (None) the tree node at ``path``."""

        def __init__(self, path: str, fold: bool | None) -> None:
            super().__init__()
            self.path = path
            self.fold = fold

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._shown: dict[str, Shown] = {}
        self._tree = False
        self._headers: tuple[tuple[str, int], ...] = ()
        self._reselect: str | None = None  # the cursor's cgroup when the columns were replaced

    def set_headers(self, sort: str, reverse: bool, name_width: int) -> None:
        """Column labels with ▼/▲ on the sort column, at their fixed widths (the name's as
        given); replaces the columns (and so the rows) only when one of them changed."""
        headers = tuple(
            (c.label + ((" ▼" if reverse else " ▲") if c.key == sort else ""), c.width)
            for c in COLUMNS
        )
        headers = ((headers[0][0], name_width), *headers[1:])
        if headers == self._headers:
            return
        self._reselect = self.selected_path
        self.clear(columns=True)
        self._keys, self._cells, self._shown, self._headers = [], {}, {}, headers
        for column, (text, width) in zip(COLUMNS, headers, strict=True):
            self.add_column(Text(text, style="bold"), width=width, key=column.key)

    @property
    def selected_path(self) -> str | None:
        """The cgroup under the cursor, or None when the table is empty."""
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return path_of(self._keys[self.cursor_row])

    def show(self, shown: Sequence[Shown], tree: bool) -> None:
        """Show these rows in this order, rewriting only what changed."""
        keys = [row_key(s.row.path) for s in shown]
        new_cells = {}
        for key, row in zip(keys, shown, strict=True):
            # an idle cgroup's figures repeat frame after frame: reuse its formatted cells
            same = tree == self._tree and self._shown.get(key) == row
            new_cells[key] = self._cells[key] if same else cells(row, tree)
        if keys == self._keys:
            for key in keys:
                old, new = self._cells[key], new_cells[key]
                for column, before, after in zip(COLUMNS, old, new, strict=True):
                    if before != after:
                        self.update_cell(key, column.key, after)
        else:
            selected = self.selected_path if self._keys else self._reselect
            self.clear()
            for key in keys:
                self.add_row(*new_cells[key], key=key)
            if selected is not None and row_key(selected) in new_cells:
                self.move_cursor(row=keys.index(row_key(selected)), animate=False)
        self._keys, self._cells = keys, new_cells
        self._shown, self._tree = dict(zip(keys, shown, strict=True)), tree

    def select_path(self, path: str) -> bool:
        """Move the cursor to ``path``'s row; False when it is not shown."""
        key = row_key(path)
        if key not in self._keys:
            return False
        self.move_cursor(row=self._keys.index(key), animate=False)
        return True

    def action_fold_or_scroll(self, fold: bool) -> None:
        path = self.selected_path
        shown = self._shown.get(row_key(path)) if path is not None else None
        if self._tree and shown is not None and shown.row.children and shown.folded != fold:
            self.post_message(self.Fold(shown.row.path, fold))
        elif fold:
            self.action_cursor_left()
        else:
            self.action_cursor_right()

    def action_fold(self, fold: bool | None) -> None:
        path = self.selected_path
        if path is not None:
            self.post_message(self.Fold(path, fold))
