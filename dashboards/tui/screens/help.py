"""The help screen (?): every key, what each column means, and where the figures come from."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: tuple[tuple[str, str], ...] = (
    ("q", "quit"),
    ("?", "this help (Esc closes it)"),
    ("↑ ↓  j k", "move; PgUp PgDn, Home End (top, bottom)"),
    ("Enter", "detail of the selected cgroup: plots, limits, processes, its actions"),
    ("Esc", "back; on the main screen, clear the filter"),
    ("space", "pause: keep showing this frame (a replay stops playing)"),
    ("+ -", "refresh interval longer, shorter (a replay's playback pace)"),
    ("/", "filter by a substring of path, name or kind (Enter keeps it)"),
    ("s  S", "sort by the next column; reverse the order (or click a header)"),
    ("t", "tree of all cgroups / flat list of containers"),
    ("← →  f", "in the tree: fold, unfold, toggle the selected node"),
    ("e", "the enforcer's action log"),
    ("ctrl+p", "command palette: sort, filter, views, screens"),
    ("← → (replay)", "step one frame back, forward"),
    ("[ ] (replay)", "jump 10 frames back, forward"),
    ("Home End (replay)", "first frame, last frame"),
)

COLUMNS_HELP: tuple[tuple[str, str], ...] = (
    ("CPU", "cores used (cpu.stat usage_usec), and % of cpu.max when it is set"),
    ("WSET", "working set: memory.current - inactive_file"),
    ("MEM/LIMIT", "memory.current / the lower of memory.high and memory.max, with a bar"),
    ("PSI", "memory.pressure some avg10 (% of the last 10 s some task stalled)"),
    ("READ/s WRITE/s", "io.stat bytes per second, all devices"),
    ("PIDS", "pids.current / pids.max"),
    ("THR", "throttled periods / elapsed periods of its cpu.max (cpu.stat)"),
    ("LAST ACTION", "the enforcer's newest audit entry for the cgroup"),
)


def _table(title: str, rows: tuple[tuple[str, str], ...]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    for key, text in rows:
        table.add_row(key, text)
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and columns; Esc or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text("corral top — keys", style="bold"))
            yield Static(_table("", KEYS))
            yield Static(_table("Columns", COLUMNS_HELP))
            yield Static(
                Text(
                    "A figure the kernel did not give shows as -, a limit of max as max.",
                    style="dim",
                )
            )
