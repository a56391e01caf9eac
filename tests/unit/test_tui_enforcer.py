"""The enforcer screen: the pure filtering and counting of audit entries, and the screen
through Textual's pilot (newest first, filters, the count by outcome, live updates, Esc)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import tui_data
from textual.app import App
from textual.widgets import Input, Select, Static
from tui_data import FIRST_WALL, FakeSource, audit_entries, pilot_test

import dashboards.tui.app
from dashboards.tui.app import CorralTop, FrameUpdated
from dashboards.tui.screens.enforcer import EnforcerScreen
from dashboards.tui.sources.base import Frame
from dashboards.tui.widgets.audit_list import (
    AuditFilter,
    AuditList,
    clock,
    counts_text,
    for_cgroup,
    newest_first,
    outcome_counts,
    shown_value,
)
from enforce.actions import Outcome


def test_filters_match_substrings_and_the_exact_outcome() -> None:
    entries = audit_entries()
    assert len(newest_first(entries, AuditFilter())) == 4
    assert {e.cgroup for e in newest_first(entries, AuditFilter(cgroup="WEB"))} == {"corral/web"}
    assert [e.rule for e in newest_first(entries, AuditFilter(rule="head"))] == ["headroom"]
    refused = newest_first(entries, AuditFilter(outcome=Outcome.REFUSED))
    assert [e.cgroup for e in refused] == ["corral/batch"]
    assert newest_first(entries, AuditFilter(controller="cpu")) == []
    both = AuditFilter(rule="squeeze", outcome=Outcome.APPLIED, cgroup="corral/")
    assert len(newest_first(entries, both)) == 2


def test_newest_first_keeps_the_later_line_first_on_equal_times() -> None:
    a, b, c, _ = audit_entries()
    same = replace(c, time=b.time, rule="later")
    assert newest_first([a, b, same]) == [same, b, a]


def test_for_cgroup_is_that_cgroup_only() -> None:
    entries = audit_entries()
    sibling = replace(entries[0], cgroup="corral/web-canary")
    assert [e.cgroup for e in for_cgroup([*entries, sibling], "corral/web")] == ["corral/web"] * 2


def test_counts_by_outcome() -> None:
    entries = audit_entries()
    counts = outcome_counts(entries)
    assert counts == {Outcome.APPLIED: 2, Outcome.DRY_RUN: 1, Outcome.REFUSED: 1}
    assert counts_text(counts, 4) == "4 actions: 2 applied · 1 dry-run · 1 refused"
    assert counts_text({Outcome.REFUSED: 1}, 4) == "1 of 4 actions: 1 refused"
    assert counts_text({}, 4) == "0 of 4 actions"
    assert counts_text({}, 0) == "no actions"


def test_values_are_shown_in_iec_units_for_memory_files_only() -> None:
    assert shown_value("memory.high", "536870912") == "512Mi"
    assert shown_value("memory.max", "max") == "max"
    assert shown_value("pids.max", "100") == "100"
    assert shown_value("cpu.max", "50000 100000") == "50000 100000"
    assert shown_value("memory.high", None) == "-"


def test_clock_shows_the_date_only_for_another_day() -> None:
    now = time.time()
    assert len(clock(now)) == len("12:34:56")
    assert clock(now - 3 * 86400).count("-") == 1  # "11-26 12:34:56"


class Host(App[None]):
    """A minimal app holding a frame, as CorralTop does, with its styles."""

    CSS_PATH = Path(dashboards.tui.app.__file__).with_name("corral.tcss")

    def __init__(self, frame: Frame) -> None:
        super().__init__()
        self.frame = frame

    def on_mount(self) -> None:
        self.push_screen(EnforcerScreen())


def _screen(app: App[None]) -> EnforcerScreen:
    screen = app.screen
    assert isinstance(screen, EnforcerScreen)
    return screen


def _title(app: App[None]) -> str:
    return str(_screen(app).query_one("#enforcer-title", Static).render())


@pilot_test
async def test_the_log_is_newest_first_with_a_count_by_outcome() -> None:
    app = Host(tui_data.frame(3))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        log = _screen(app).query_one(AuditList)
        assert [e.time for e in log.shown] == sorted((e.time for e in log.shown), reverse=True)
        assert log.row_count == 4
        assert "4 actions: 2 applied · 1 dry-run · 1 refused" in _title(app)
        # at 80 columns the outcome and the change are on screen, the reason may scroll
        first = [str(c) for c in log.get_row_at(0)]
        assert first[1:5] == ["dry-run", "corral/db", "memory.max", "2Gi → max"]


@pilot_test
async def test_typing_filters_narrows_the_log_and_x_clears_them() -> None:
    app = Host(tui_data.frame(3))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = _screen(app)
        log = screen.query_one(AuditList)
        await pilot.press("slash", "w", "e", "b")
        assert screen.query_one("#filter-cgroup", Input).has_focus
        assert {e.cgroup for e in log.shown} == {"corral/web"}
        assert "2 of 4 actions: 2 applied" in _title(app)
        screen.query_one("#filter-outcome", Select).value = "refused"
        await pilot.pause()
        assert log.shown == [] and "0 of 4 actions" in _title(app)
        screen.query_one("#filter-cgroup", Input).value = ""
        await pilot.pause()
        assert [e.cgroup for e in log.shown] == ["corral/batch"]
        await pilot.click("#filter-rule")
        await pilot.press("h", "e", "a", "d")
        assert log.shown == []  # the refusal came from "squeeze"
        log.focus()
        await pilot.press("x")
        assert len(log.shown) == 4 and screen.where == AuditFilter()


@pilot_test
async def test_new_frames_update_the_log_in_place_under_the_filters() -> None:
    app = Host(tui_data.frame(3))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = _screen(app)
        screen.query_one("#filter-cgroup", Input).value = "batch"
        await pilot.pause()
        log = screen.query_one(AuditList)
        assert len(log.shown) == 1
        failed = replace(
            audit_entries()[1], time=FIRST_WALL + 60, outcome=Outcome.FAILED, reason="EBUSY"
        )
        base = tui_data.frame(3)
        newer = Frame(base.snapshot, base.history, (*audit_entries(), failed))
        screen.post_message(FrameUpdated(newer))
        await pilot.pause()
        assert screen.query_one(AuditList) is log
        assert [e.outcome for e in log.shown] == [Outcome.FAILED, Outcome.REFUSED]
        assert "2 of 5 actions: 1 refused · 1 failed" in _title(app)


@pilot_test
async def test_no_audit_says_so_and_escape_goes_back() -> None:
    app = Host(tui_data.frame(3, audit=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "no actions" in _title(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, EnforcerScreen)


@pilot_test
async def test_through_corral_top_e_opens_the_log_and_frames_reach_it() -> None:
    source = FakeSource()
    app = CorralTop(source)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(250):
            if app.frame is not None:
                break
            await pilot.pause(0.02)
        await pilot.press("e")
        screen = _screen(app)
        assert len(screen.query_one(AuditList).shown) == 4
        source.advance()
        first = app.frame
        for _ in range(250):
            if app.frame is not first:
                break
            await pilot.pause(0.02)
        await pilot.pause()
        assert app.frame is not first and screen.frame is app.frame
        await pilot.press("escape")
        assert app.screen is app.main
