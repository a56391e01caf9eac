"""Snapshot tests of `corral top` (pytest-textual-snapshot) on the deterministic fixture of
tui_data, at 80x24 and 160x48, in the dark and the light theme. The SVGs are in
__snapshots__/test_tui_snapshots/; after a deliberate change of the screens, regenerate them
with `pytest tests/unit/test_tui_snapshots.py --snapshot-update` and look at each one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from syrupy import snapshot  # noqa: F401 (tests/unit/conftest.py has a `snapshot` of its own)
from test_tui_app import until, utc  # noqa: F401  (utc: autouse, pins TZ)
from textual.pilot import Pilot
from textual.widgets import Static
from tui_data import FakeReplay, FakeSource

from dashboards.tui.app import CorralTop
from dashboards.tui.widgets.status import StatusBar
from dashboards.tui.widgets.table import CgroupTable

SMALL = (80, 24)
LARGE = (160, 48)
Compare = Callable[..., bool]


def first_frame(*keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Wait for the first frame in the table, then press ``keys``."""

    async def run(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CorralTop)
        await until(pilot, lambda: app.main.query_one(CgroupTable).row_count > 0)
        await pilot.press(*keys)
        await pilot.pause(0.05)

    return run


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_tree_dark(snap_compare: Compare, size: tuple[int, int]) -> None:
    assert snap_compare(CorralTop(FakeSource()), terminal_size=size, run_before=first_frame())


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_tree_light_folded_sorted_by_name(snap_compare: Compare, size: tuple[int, int]) -> None:
    app = CorralTop(FakeSource(), theme="textual-light")
    keys = ("j", "j", "j", "j", "j", "left") + ("s",) * 9  # fold user.slice; sort NAME ▲
    assert snap_compare(app, terminal_size=size, run_before=first_frame(*keys))


def test_flat_containers_filtered_light(snap_compare: Compare) -> None:
    app = CorralTop(FakeSource(), theme="textual-light")
    keys = ("t", "slash", *"corral/", "enter")
    assert snap_compare(app, terminal_size=SMALL, run_before=first_frame(*keys))


def test_disconnected_banner(snap_compare: Compare) -> None:
    source = FakeSource(disconnect_calls=(1,))

    async def run(pilot: Pilot[Any]) -> None:
        await first_frame()(pilot)
        source.advance()
        banner = pilot.app.screen.query_one(StatusBar).query_one("#banner", Static)
        await until(pilot, lambda: banner.display)

    assert snap_compare(CorralTop(source), terminal_size=SMALL, run_before=run)


def test_paused_replay(snap_compare: Compare) -> None:
    source = FakeReplay(40)

    async def run(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CorralTop)
        await first_frame("space", "right_square_bracket", "right")(pilot)
        await until(pilot, lambda: app.status.position == "frame 12/40")

    assert snap_compare(CorralTop(source), terminal_size=LARGE, run_before=run)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_help(snap_compare: Compare, theme: str) -> None:
    app = CorralTop(FakeSource(), theme=theme)
    assert snap_compare(app, terminal_size=SMALL, run_before=first_frame("question_mark"))
