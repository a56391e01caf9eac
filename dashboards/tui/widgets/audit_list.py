"""The enforcer's audit entries as a table, newest first, and the pure filtering and counting
the enforcer and detail screens share.

An entry is one line of the enforcer's JSON-lines audit log (enforce.actions.AuditEntry):
``old``/``new`` are the kernel file's text; byte-valued files (memory.*) are shown in IEC
units ("512Mi"), every other file as the kernel prints it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable

from dashboards.tui.series import iec_bytes
from enforce.actions import AuditEntry, Outcome

# Outcome colours are ANSI names (as in the main table's last-action column), so they
# follow the terminal's light or dark palette.
OUTCOME_STYLE = {
    Outcome.APPLIED: "green",
    Outcome.DRY_RUN: "dim",
    Outcome.RECOMMENDED: "dim",
    Outcome.REFUSED: "red",
    Outcome.FAILED: "bold red",
    Outcome.SKIPPED: "dim",
}
_BYTE_FILES = frozenset(
    {"memory.high", "memory.max", "memory.low", "memory.min", "memory.swap.max"}
)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to show: ``rule``, ``controller`` and ``cgroup`` match as substrings
    (case-insensitive; "" matches all), ``outcome`` exactly (None: every outcome)."""

    rule: str = ""
    controller: str = ""
    outcome: Outcome | None = None
    cgroup: str = ""

    def matches(self, entry: AuditEntry) -> bool:
        return (
            self.rule.lower() in entry.rule.lower()
            and self.controller.lower() in entry.controller.lower()
            and (self.outcome is None or entry.outcome is self.outcome)
            and self.cgroup.lower() in entry.cgroup.lower()
        )


def newest_first(
    entries: Iterable[AuditEntry], where: AuditFilter | None = None
) -> list[AuditEntry]:
    """The entries ``where`` matches, newest first (equal times keep the log's order
    reversed: the later line is the newer)."""
    kept = [e for e in entries if where is None or where.matches(e)]
    kept.reverse()
    kept.sort(key=lambda e: e.time, reverse=True)
    return kept


def for_cgroup(entries: Iterable[AuditEntry], cgroup: str) -> list[AuditEntry]:
    """The entries about exactly ``cgroup``, newest first."""
    return newest_first(e for e in entries if e.cgroup == cgroup)


def outcome_counts(entries: Iterable[AuditEntry]) -> dict[Outcome, int]:
    """How many entries had each outcome, in the Outcome enum's order, zeros left out."""
    counts = Counter(e.outcome for e in entries)
    return {o: counts[o] for o in Outcome if counts[o]}


def counts_text(counts: dict[Outcome, int], total: int) -> str:
    """ "12 actions: 9 applied · 2 refused · 1 failed" ("no actions" when there are none)."""
    if not total:
        return "no actions"
    shown = sum(counts.values())
    head = f"{shown} of {total} actions" if shown != total else f"{total} actions"
    parts = " · ".join(f"{n} {o.value}" for o, n in counts.items())
    return f"{head}: {parts}" if parts else head


def shown_value(file: str, text: str | None) -> str:
    """An old/new value as shown: bytes in IEC units for memory files, else as written."""
    if text is None:
        return "-"
    if file in _BYTE_FILES and text.isdigit():
        return iec_bytes(int(text))
    return text


def clock(wall: float) -> str:
    """The entry's local time of day; the date too when it is not today's."""
    when, now = time.localtime(wall), time.localtime()
    same_day = when[:3] == now[:3]
    return time.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M:%S", when)


class AuditList(DataTable[str | Text]):
    """Audit entries, newest first, one row each; ``with_cgroup`` adds the cgroup column
    (the enforcer screen), the detail screen leaves it out (it is about one cgroup)."""

    DEFAULT_CSS = """
    AuditList { height: 1fr; }
    """

    def __init__(self, *, with_cgroup: bool = True, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.with_cgroup = with_cgroup
        self.shown: list[AuditEntry] = []

    def on_mount(self) -> None:
        # Outcome and what changed first: at 80 columns the rest scrolls off to the right.
        columns = ["time", "outcome"]
        columns += ["cgroup"] if self.with_cgroup else []
        columns += ["file", "old → new", "rule", "ctrl", "reason"]
        for name in columns:
            self.add_column(name, key=name)

    def show(self, entries: Sequence[AuditEntry]) -> None:
        """Replace the rows with ``entries`` (already in display order), keeping the cursor
        on the same entry when it is still there."""
        if list(entries) == self.shown:
            return
        selected = self.shown[self.cursor_row] if 0 <= self.cursor_row < len(self.shown) else None
        self.shown = list(entries)
        self.clear()
        for entry in self.shown:
            self.add_row(*self._cells(entry))
        if selected is not None and selected in self.shown:
            self.move_cursor(row=self.shown.index(selected), animate=False)

    def _cells(self, entry: AuditEntry) -> list[str | Text]:
        change = f"{shown_value(entry.file, entry.old)} → {shown_value(entry.file, entry.new)}"
        outcome = Text(entry.outcome.value, style=OUTCOME_STYLE[entry.outcome])
        cells: list[str | Text] = [clock(entry.time), outcome]
        if self.with_cgroup:
            cells.append(entry.cgroup or "/")
        cells += [entry.file, change, entry.rule, entry.controller, entry.reason]
        return cells
