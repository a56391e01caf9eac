"""The `corral top` app driven by Textual's pilot (App.run_test) over the deterministic
Sources of tui_data: sorting, filtering, tree folding, navigation, pause, the interval, the
disconnected banner and reconnection, replay keys, the command palette."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from textual.pilot import Pilot
from textual.widgets import Input, Static
from tui_data import CONTAINERS, PATHS, FakeReplay, FakeSource, pilot_test

from corral.cli.top import top
from dashboards.tui.app import CorralTop
from dashboards.tui.rows import View
from dashboards.tui.screens.help import HelpScreen
from dashboards.tui.sources.replay import ReplaySource
from dashboards.tui.widgets.status import StatusBar
from dashboards.tui.widgets.table import CgroupTable, path_of

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The status bar shows local time: pin it."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def until(pilot: Pilot[None], condition: Callable[[], object], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await pilot.pause(0.01)


def table(app: CorralTop) -> CgroupTable:
    return app.main.query_one(CgroupTable)


def shown(app: CorralTop) -> list[str | None]:
    return [path_of(r.key.value) for r in table(app).ordered_rows]


def cell(app: CorralTop, path: str, column: str) -> str:
    value = table(app).get_cell(path or "/", column)
    return value if isinstance(value, str) else value.plain


def banner(app: CorralTop) -> Static:
    return app.screen.query_one(StatusBar).query_one("#banner", Static)


def status_text(app: CorralTop) -> str:
    widget = app.screen.query_one(StatusBar).query_one("#status-line", Static)
    return str(widget.render())


def on_main(app: CorralTop) -> bool:
    return app.screen is app.main


async def started(pilot: Pilot[None]) -> CorralTop:
    app = pilot.app
    assert isinstance(app, CorralTop)
    await until(pilot, lambda: app.frame is not None and table(app).row_count > 0)
    return app


async def caught_up(pilot: Pilot[None], app: CorralTop) -> None:
    """Wait until the table shows the app's latest frame (the screen takes it from a
    message, after the app has it)."""
    await until(pilot, lambda: app.main.frame_shown is app.frame)


@pilot_test
async def test_first_frame_fills_the_table_and_status() -> None:
    source = FakeSource()
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        assert shown(app) == [
            "",
            "corral",
            "corral/batch",
            "corral/web",
            "corral/db",
            "user.slice",
            "user.slice/user-1000.slice",
            "system.slice",
            "system.slice/sshd.service",
            "system.slice/cron.service",
        ]
        assert cell(app, "corral/web", "cpu") == "0.48 96%"
        assert cell(app, "corral/web", "mem") == "448Mi/512Mi ███▌"
        assert cell(app, "corral/batch", "action") == "memory.high=96Mi refused"
        assert "fake │ live │ 00:00:09 │ every 1s │ 10 cgroups" in status_text(app)
        assert not banner(app).display
        assert source.calls == 1  # the first frame only, until the test releases another
    assert source.closed


@pilot_test
async def test_new_frames_update_the_same_rows_in_place() -> None:
    source = FakeSource()
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        widget, first = table(app), app.frame
        source.advance()
        await until(pilot, lambda: app.frame is not first)
        await caught_up(pilot, app)
        assert table(app) is widget and shown(app)[0] == ""
        assert "00:00:10" in status_text(app)


@pilot_test
async def test_sort_keys_cycle_and_reverse() -> None:
    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("s")  # cpu -> wset, biggest first
        assert (app.main.spec.sort, app.main.spec.reverse) == ("wset", True)
        assert shown(app)[:3] == ["", "corral", "corral/db"]
        assert str(table(app).columns["wset"].label) == "WSET ▼"  # type: ignore[index]
        await pilot.press("S")
        assert app.main.spec.reverse is False
        assert shown(app)[:3] == ["", "system.slice", "system.slice/cron.service"]
        await pilot.press("t")  # the flat view keeps the sort
        assert shown(app) == ["corral/batch", "corral/web", "corral/db"]


@pilot_test
async def test_header_click_sorts_and_again_reverses() -> None:
    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("t")
        await pilot.click(CgroupTable, offset=(2, 0))  # the NAME header
        assert app.main.spec == View(sort="name", reverse=False, tree=False)
        assert shown(app) == ["corral/batch", "corral/db", "corral/web"]
        await pilot.click(CgroupTable, offset=(2, 0))
        assert shown(app) == ["corral/web", "corral/db", "corral/batch"]


@pilot_test
async def test_filter_by_substring_then_clear() -> None:
    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("slash")
        box = app.main.query_one("#filter", Input)
        assert box.display and app.focused is box
        await pilot.press(*"SLICE q[")  # q and [ are typed, not quit or seek
        assert app.is_running and app.main.spec.filter == "SLICE q["
        assert shown(app) == []
        await pilot.press("backspace", "backspace", "backspace", *"/USER")
        await pilot.press("enter")
        assert not box.display and isinstance(app.focused, CgroupTable)
        assert shown(app) == ["", "user.slice", "user.slice/user-1000.slice"]
        viewline = str(app.main.query_one("#viewline", Static).render())
        assert "filter 'SLICE/USER'" in viewline and "3/10 shown" in viewline
        await pilot.press("escape")
        assert app.main.spec.filter == "" and len(shown(app)) == len(PATHS)


@pilot_test
async def test_tree_folds_with_arrows_and_f() -> None:
    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("j")  # the cursor on corral
        assert table(app).selected_path == "corral"
        await pilot.press("left")
        assert app.main.spec.folded == {"corral"}
        assert not set(CONTAINERS) & set(shown(app))
        assert cell(app, "corral", "name").strip() == "▸ corral"
        await pilot.press("left")  # already folded: scrolls, changes nothing
        assert app.main.spec.folded == {"corral"}
        await pilot.press("right")
        assert app.main.spec.folded == frozenset() and len(shown(app)) == len(PATHS)
        await pilot.press("f", "k", "f")  # fold corral, then the root
        assert shown(app) == [""]
        assert table(app).selected_path == ""
        await pilot.press("f")
        assert shown(app) == [
            "",
            "corral",
            "user.slice",
            "user.slice/user-1000.slice",
            "system.slice",
            "system.slice/sshd.service",
            "system.slice/cron.service",
        ]


@pilot_test
async def test_cursor_stays_on_its_cgroup_when_rows_change() -> None:
    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("down", "down", "down")
        assert table(app).selected_path == "corral/web"
        await pilot.press("s", "s", "s", "s")  # sort by read bytes: the order changes
        assert app.main.spec.sort == "read"
        assert table(app).selected_path == "corral/web"
        await pilot.press("t")
        assert table(app).selected_path == "corral/web"


@pilot_test
async def test_enter_opens_detail_and_escape_returns() -> None:
    from dashboards.tui.screens.detail import DetailScreen
    from dashboards.tui.screens.enforcer import EnforcerScreen

    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("j", "j", "enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.cgroup == "corral/batch"
        await pilot.press("escape")
        assert on_main(app)
        await pilot.press("e")
        assert isinstance(app.screen, EnforcerScreen)
        await pilot.press("escape", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert on_main(app) and app.is_running
        await pilot.press("q")
        assert not app.is_running


@pilot_test
async def test_pause_holds_the_frame_until_resumed() -> None:
    source = FakeSource()
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        first = app.frame
        await pilot.press("space")
        assert app.paused and "PAUSED" in status_text(app)
        source.advance()
        await until(pilot, lambda: source.frames == 2)
        await pilot.pause(0.05)
        assert app.frame is first and "00:00:09" in status_text(app)
        await pilot.press("space")
        assert app.frame is not first and "00:00:10" in status_text(app)
        assert "PAUSED" not in status_text(app)


@pilot_test
async def test_plus_minus_change_the_source_interval() -> None:
    source = FakeSource(interval=1.0)
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("plus")
        assert source.interval == 2.0 and "every 2s" in status_text(app)
        await pilot.press("minus", "minus")
        assert source.interval == 0.5 and "every 500ms" in status_text(app)
        await pilot.press(*["minus"] * 5)
        assert source.interval == 0.25
        await pilot.press(*["plus"] * 12)
        assert source.interval == 60.0 and "every 1m" in status_text(app)


@pilot_test
async def test_disconnect_shows_a_banner_and_recovers() -> None:
    source = FakeSource(interval=0.05, disconnect_calls=(1, 2))
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        source.advance()
        await until(pilot, lambda: banner(app).display)
        assert str(banner(app).render()) == "disconnected: connection refused (call 1) — retrying"
        assert len(shown(app)) == len(PATHS)  # the last frame stays on screen
        source.advance()  # still down: the app asked again by itself
        await until(pilot, lambda: "call 2" in str(banner(app).render()))
        source.advance()
        await until(pilot, lambda: not banner(app).display)
        assert source.frames == 2 and "00:00:10" in status_text(app)


@pilot_test
async def test_down_from_the_start_then_up() -> None:
    source = FakeSource(interval=0.05, disconnect_calls=(0,))
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = pilot.app
        assert isinstance(app, CorralTop)
        await until(pilot, lambda: banner(app).display)
        assert app.frame is None and "waiting for the first frame" in status_text(app)
        source.advance()
        await until(pilot, lambda: app.frame is not None)
        await caught_up(pilot, app)
        assert not banner(app).display and len(shown(app)) == len(PATHS)


@pilot_test
async def test_replay_keys_step_jump_and_reach_the_ends() -> None:
    source = FakeReplay(40)
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)

        async def at(position: str) -> None:
            await until(pilot, lambda: app.frame is not None and app.frame.position == position)

        await at("frame 1/40")
        await pilot.press("right")
        await at("frame 2/40")
        await pilot.press("right_square_bracket")
        await at("frame 12/40")
        await pilot.press("left")
        await at("frame 11/40")
        await pilot.press("left_square_bracket", "left_square_bracket")
        await at("frame 1/40")  # stops at the first frame
        await pilot.press("end")
        await at("frame 40/40")
        await pilot.press("home")
        await at("frame 1/40")
        assert app.main.spec.folded == frozenset()  # the arrows stepped, never folded
        assert "replay: fixture │ frame 1/40" in status_text(app)


@pilot_test
async def test_paused_replay_stops_playing_but_still_steps() -> None:
    source = FakeReplay(40)
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("space")
        source.advance(2)  # the play already waiting gets one; no other is asked for
        await until(pilot, lambda: app.frame is not None and app.frame.position == "frame 2/40")
        await pilot.pause(0.3)
        assert source.index == 1 and app.status.position == "frame 2/40"
        await pilot.press("right")
        await until(pilot, lambda: app.frame is not None and app.frame.position == "frame 3/40")
        await pilot.press("space")  # plays on from the frame shown
        await until(pilot, lambda: app.frame is not None and app.frame.position == "frame 4/40")


@pilot_test
async def test_live_source_ignores_replay_keys() -> None:
    source = FakeSource()
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("right_square_bracket", "home", "end")
        await pilot.pause(0.1)
        assert app.frame is not None and app.frame.position == "live"
        assert source.calls == 1 and app.is_running


@pilot_test
async def test_command_palette_sorts_and_toggles() -> None:
    async with CorralTop(FakeSource()).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"Sort by PSI")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app.main.spec.sort == "psi")
        assert shown(app)[2] == "corral/batch"
        await pilot.press("ctrl+p")
        await pilot.press(*"Toggle tree")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: not app.main.spec.tree)
        assert shown(app)[0] == "corral/batch"


RECORDING = Path(__file__).resolve().parent.parent / "fixtures" / "recordings" / "demo.corral"


@pilot_test
async def test_replay_of_a_real_recording() -> None:
    """The real ReplaySource (a recording from the 6.1 kernel, see its README): steps
    answer while the play waits its interval; a paused replay stays where it is."""
    source = ReplaySource(RECORDING, interval=30.0)  # play never moves during the test
    async with CorralTop(source).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        assert app.status.position.startswith("frame 1/121 ")
        services = [
            "demo.slice/web.service",
            "demo.slice/batch.service",
            "demo.slice/forky.service",
        ]
        assert set(shown(app)) == {"", "demo.slice", *services}
        assert cell(app, "demo.slice/web.service", "cpu") == "-"  # no rates in a first frame
        await pilot.press("end")
        await until(pilot, lambda: app.status.position.startswith("frame 121/121 "))
        await caught_up(pilot, app)
        # what the kernel did (see the recording's README): web at its cpu.max of 0.5 and
        # throttled throughout, batch above memory.high 48M under memory pressure, forky
        # against pids.max 8
        assert shown(app)[2] == "demo.slice/web.service"  # the busiest first
        figures = {
            p: [cell(app, p, c) for c in ("cpu", "mem", "psi", "pids", "thr")] for p in services
        }
        assert figures["demo.slice/web.service"] == [
            "0.50 100%",
            "5.7Mi/max",
            "0.0",
            "1/max",
            "100%",
        ]
        batch = figures["demo.slice/batch.service"]
        assert batch[1] == "70Mi/48Mi ████" and float(batch[2]) > 50
        assert figures["demo.slice/forky.service"][3] == "7/8"
        await pilot.press("left_square_bracket", "left")
        await until(pilot, lambda: app.status.position.startswith("frame 110/121 "))
        await pilot.press("space", "home")
        await until(pilot, lambda: app.status.position.startswith("frame 1/121 "))
        assert app.paused


def test_cli_refuses_conflicting_options(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(top, ["--url", "http://127.0.0.1:1", "--replay", str(RECORDING)])
    assert both.exit_code == 2 and "--url and --replay: give one of them" in both.output
    speed = runner.invoke(top, ["--speed", "2"])
    assert speed.exit_code == 2 and "--speed 2: only with --replay" in speed.output
    subtree = runner.invoke(top, ["--url", "http://127.0.0.1:1", "--subtree", "x"])
    assert subtree.exit_code == 2 and "not with --url or --replay" in subtree.output
    interval = runner.invoke(top, ["--interval", "0"])
    assert interval.exit_code == 2 and "'0': expected a duration from 0.1 s" in interval.output
    url = runner.invoke(top, ["--url", "ftp://host"])
    assert url.exit_code == 2 and "url 'ftp://host'" in url.output
    empty = tmp_path / "empty.corral"
    empty.write_bytes(b"")
    bad = runner.invoke(top, ["--replay", str(empty)])
    assert bad.exit_code == 1 and f"--replay {empty}:" in bad.output
    theme = runner.invoke(top, ["--theme", "no-such-theme"])
    assert theme.exit_code == 2 and "textual-light" in theme.output
