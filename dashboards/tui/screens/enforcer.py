"""The enforcer's live action log: every audit entry of the frame, newest first, filtered by
rule, controller, outcome and cgroup, with a count of the shown entries by outcome.

Entries come from ``Frame.audit`` (the source tails the enforcer's JSON-lines audit log, or
reads /api/v1/audit of a remote agent); the screen re-filters on every FrameUpdated and on
every change to a filter, and keeps the cursor on the entry it was on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Select, Static

from dashboards.tui.sources.base import Frame
from dashboards.tui.widgets.audit_list import (
    AuditFilter,
    AuditList,
    counts_text,
    newest_first,
    outcome_counts,
)
from dashboards.tui.widgets.status import StatusBar
from enforce.actions import AuditEntry, Outcome

if TYPE_CHECKING:
    from dashboards.tui.app import FrameUpdated

_TEXT_FILTERS = ("rule", "controller", "cgroup")


class EnforcerScreen(Screen[None]):
    """The action log of the frame's audit; Esc goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("x", "clear_filters", "Clear filters"),
    ]
    DEFAULT_CSS = """
    EnforcerScreen #enforcer-title { height: auto; padding: 0 1; background: $panel; }
    EnforcerScreen #filters { height: auto; }
    EnforcerScreen #filters Input, EnforcerScreen #filters Select { width: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.frame: Frame | None = None
        self.audit: tuple[AuditEntry, ...] = ()
        self.where = AuditFilter()

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(id="enforcer-title")
        with Horizontal(id="filters"):
            yield Input(placeholder="rule", id="filter-rule")
            yield Input(placeholder="controller", id="filter-controller")
            yield Select(
                [(o.value, o.value) for o in Outcome], prompt="any outcome", id="filter-outcome"
            )
            yield Input(placeholder="cgroup", id="filter-cgroup")
        yield AuditList(with_cgroup=True, id="enforcer-log")
        yield Footer()

    def on_mount(self) -> None:
        frame = getattr(self.app, "frame", None)
        if isinstance(frame, Frame):
            self.show_frame(frame)
        else:
            self._refilter()
        self.query_one(AuditList).focus()

    def on_frame_updated(self, message: FrameUpdated) -> None:
        self.show_frame(message.frame)

    def on_screen_resume(self) -> None:
        frame = getattr(self.app, "frame", None)
        if isinstance(frame, Frame):
            self.show_frame(frame)

    def show_frame(self, frame: Frame) -> None:
        """Show ``frame``'s audit under the current filters."""
        if frame is self.frame:
            return
        self.frame = frame
        self.audit = tuple(frame.audit)
        self._refilter()

    @on(Input.Changed)
    @on(Select.Changed)
    def _filters_changed(self) -> None:
        outcome = self.query_one("#filter-outcome", Select).value
        texts = {name: self.query_one(f"#filter-{name}", Input).value for name in _TEXT_FILTERS}
        self.where = AuditFilter(
            rule=texts["rule"].strip(),
            controller=texts["controller"].strip(),
            outcome=Outcome(outcome) if isinstance(outcome, str) else None,
            cgroup=texts["cgroup"].strip(),
        )
        self._refilter()

    def _refilter(self) -> None:
        shown = newest_first(self.audit, self.where)
        self.query_one(AuditList).show(shown)
        title = "Enforcer actions  " + counts_text(outcome_counts(shown), len(self.audit))
        if not self.audit:
            title += " (none logged yet, or this source has no audit log)"
        self.query_one("#enforcer-title", Static).update(title)

    def action_focus_filter(self) -> None:
        self.query_one("#filter-cgroup", Input).focus()

    def action_clear_filters(self) -> None:
        for name in _TEXT_FILTERS:
            self.query_one(f"#filter-{name}", Input).value = ""
        self.query_one("#filter-outcome", Select).clear()
        self.query_one(AuditList).focus()

    def action_back(self) -> None:
        self.app.pop_screen()
