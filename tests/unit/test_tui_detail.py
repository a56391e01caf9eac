"""The detail screen through Textual's pilot: plots, limits, processes (read in a worker
thread, sortable), the cgroup's audit entries, updates in place, Esc, sizes and themes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import tui_data
from rich.style import Style
from rich.text import Text
from textual.app import App
from textual.color import Color
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent
from tui_data import pilot_test

import dashboards.tui.app
from dashboards.tui.app import CorralTop, FrameUpdated
from dashboards.tui.screens.detail import DetailScreen
from dashboards.tui.sources.base import Frame, ProcessRow, SourceDisconnected
from dashboards.tui.sources.local import LocalSource
from dashboards.tui.widgets.audit_list import AuditList
from dashboards.tui.widgets.plots import ChartPlot
from dashboards.tui.widgets.processes import ProcessTable, next_sort, sort_processes
from monitor.collector import CollectorConfig
from runtime.cgroupfs import CgroupFS


class ProcessSource:
    """Only what the detail screen asks of a Source: ``processes``. ``gate`` holds each
    read until it is set (a slow psutil walk or a slow agent); ``fail`` raises instead."""

    def __init__(
        self,
        rows: Callable[[str], Sequence[ProcessRow] | None] = tui_data.processes,
        *,
        gate: threading.Event | None = None,
        fail: Exception | None = None,
    ) -> None:
        self.rows = rows
        self.gate = gate
        self.fail = fail
        self.reads: list[str] = []
        self.threads: set[str] = set()

    def processes(self, cgroup: str) -> Sequence[ProcessRow] | None:
        self.reads.append(cgroup)
        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.rows(cgroup)


class Host(App[None]):
    """A minimal app holding a frame and a source, as CorralTop does, with its styles."""

    CSS_PATH = Path(dashboards.tui.app.__file__).with_name("corral.tcss")

    def __init__(self, cgroup: str, frame: Frame, source: ProcessSource | None = None) -> None:
        super().__init__()
        self.frame = frame
        self.source = source or ProcessSource()
        self.cgroup = cgroup

    def on_mount(self) -> None:
        self.push_screen(DetailScreen(self.cgroup))


def _detail(app: App[None]) -> DetailScreen:
    screen = app.screen
    assert isinstance(screen, DetailScreen)
    return screen


def _table_rows(table: DataTable[object]) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def _until(pilot: Pilot[None], done: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if done():
            return
        await pilot.pause(0.02)
    raise AssertionError("the screen did not get there in time")


@pilot_test
async def test_detail_shows_usage_beside_limits_and_the_cgroups_audit() -> None:
    app = Host("corral/web", tui_data.frame(10))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = _detail(app)
        title = str(screen.query_one("#detail-title", Static).render())
        assert "web" in title and "container" in title and "/corral/web" in title
        assert "CPU 0.48 of 0.50 (96%)" in title and "pids 24/100" in title
        limits = dict(_table_rows(screen.query_one("#limits", DataTable)))
        assert limits["cpu.max"] == "0.50 cores (50000 100000)"
        assert limits["memory.high"] == "512Mi" and limits["memory.max"] == "1Gi"
        audit = screen.query_one(AuditList)
        assert [e.cgroup for e in audit.shown] == ["corral/web", "corral/web"]
        assert audit.shown[0].time > audit.shown[1].time  # newest first
        assert "768Mi → 512Mi" in [str(c) for c in audit.get_row_at(0)]


@pilot_test
async def test_the_plots_follow_history_and_update_in_place() -> None:
    app = Host("corral/batch", tui_data.frame(10))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = _detail(app)
        plots = {p.id: p for p in screen.query(ChartPlot)}
        assert set(plots) == {"plot-cpu", "plot-memory", "plot-io", "plot-pressure"}
        assert len(plots["plot-cpu"].chart.lines[0].values) == 10
        newer = tui_data.frame(25, step=40)
        app.frame = newer
        screen.post_message(FrameUpdated(newer))
        await pilot.pause()
        assert screen.frame is newer
        assert {p.id: p for p in screen.query(ChartPlot)} == plots  # the same widgets
        assert len(plots["plot-cpu"].chart.lines[0].values) == 25
        labels = [line.label for line in plots["plot-memory"].chart.lines]
        assert labels == ["working set", "memory.current", "memory.high"]
        # hidden plots are not recomputed; shown again, they catch up with the frame
        await pilot.press("3")
        latest = tui_data.frame(12, step=60)
        screen.post_message(FrameUpdated(latest))
        await pilot.pause()
        assert len(plots["plot-cpu"].chart.lines[0].values) == 25
        await pilot.press("1")
        assert len(plots["plot-cpu"].chart.lines[0].values) == 12


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
@pytest.mark.parametrize(("size", "grid"), [((80, 24), False), ((160, 48), True)])
@pilot_test
async def test_plots_render_stacked_when_small_and_in_a_grid_when_large(
    size: tuple[int, int], grid: bool, theme: str
) -> None:
    app = Host("corral/web", tui_data.frame(30, step=40))
    async with app.run_test(size=size) as pilot:
        app.theme = theme
        await pilot.pause()
        plots = list(_detail(app).query(ChartPlot))
        xs = {p.region.x for p in plots}
        assert len(xs) == (2 if grid else 1)
        assert all(p.region.width >= 38 and p.region.height >= 8 for p in plots)
        # a large terminal keeps the limits in sight beside the plots
        side = _detail(app).query_one("#limits-side", DataTable)
        assert side.display is grid
        assert not grid or ("memory.high", "512Mi") in [tuple(side.get_row_at(i)) for i in range(9)]
        surface = Color.parse(app.theme_variables["surface"]).rich_color
        for plot in plots:
            text = plot.render()
            assert isinstance(text, Text)
            assert plot.chart.title in text.plain  # plotext drew axes, title and legend
            backgrounds = {
                style.bgcolor
                for style in (span.style for span in text.spans)
                if isinstance(style, Style) and style.bgcolor
            }
            assert backgrounds == {surface}
        screen_text = "\n".join(s.text for s in app.screen._compositor.render_strips())
        assert "CPU (cores)" in screen_text and "now" in screen_text


@pilot_test
async def test_processes_are_read_in_a_worker_and_sort_by_column() -> None:
    source = ProcessSource()
    app = Host("corral/web", tui_data.frame(5), source)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert source.reads == []  # not read until their tab is shown
        await pilot.press("2")
        table = _detail(app).query_one(ProcessTable)
        await _until(pilot, lambda: table.row_count == 3)
        assert threading.main_thread().name not in source.threads
        assert [p.pid for p in table.rows_shown] == [1500, 1501, 1502]  # CPU, biggest first
        await pilot.press("s")  # the next column: command, A to Z
        assert table.sort_column == "command"
        assert [p.command for p in table.rows_shown] == sorted(p.command for p in table.rows_shown)
        await pilot.click(ProcessTable, offset=(2, 0))  # the PID header
        assert (table.sort_column, table.sort_reversed) == ("pid", False)
        await pilot.click(ProcessTable, offset=(2, 0))  # again: reversed
        assert [p.pid for p in table.rows_shown] == [1502, 1501, 1500]
        assert "PID ▼" in str(table.columns["pid"].label)  # type: ignore[index]


@pilot_test
async def test_a_slow_process_read_never_blocks_input_nor_piles_up() -> None:
    gate = threading.Event()
    source = ProcessSource(gate=gate)
    app = Host("corral/db", tui_data.frame(5), source)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("2")
        tabs = _detail(app).query_one(TabbedContent)
        await pilot.press("3")
        assert tabs.active == "limits-pane"  # answered while the read waits
        await pilot.press("2")
        newer = tui_data.frame(5, step=20)
        _detail(app).post_message(FrameUpdated(newer))
        await pilot.pause()
        assert source.reads == ["corral/db"]  # one read at a time
        gate.set()
        table = _detail(app).query_one(ProcessTable)
        await _until(pilot, lambda: table.row_count == 3)
        assert "3 processes" in str(_detail(app).query_one("#processes-note", Static).render())


@pytest.mark.parametrize(
    ("source", "said"),
    [
        (ProcessSource(lambda cgroup: None), "cannot see processes"),
        (ProcessSource(fail=SourceDisconnected("agent went away")), "agent went away"),
    ],
)
@pilot_test
async def test_processes_that_cannot_be_read_are_said_on_screen(
    source: ProcessSource, said: str
) -> None:
    app = Host("corral/web", tui_data.frame(3), source)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        note = _detail(app).query_one("#processes-note", Static)
        await _until(pilot, lambda: said in str(note.render()))
        assert _detail(app).query_one(ProcessTable).row_count == 0


@pilot_test
async def test_a_cgroup_that_is_gone_still_shows_its_past() -> None:
    without_web = [s for s in tui_data.SPECS if s.name.path != "corral/web"]
    history = tui_data.snapshots(4) + tui_data.snapshots(2, first_step=4, specs=without_web)
    frame = Frame(history[-1], tuple(history))
    app = Host("corral/web", frame)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = _detail(app)
        assert "gone" in str(screen.query_one("#detail-title", Static).render())
        assert len(screen.query_one("#plot-cpu", ChartPlot).chart.lines[0].values) == 4
        rows = _table_rows(screen.query_one("#limits", DataTable))
        assert rows == [["(gone)", "not in this poll"]]


@pilot_test
async def test_escape_goes_back_to_the_screen_below() -> None:
    app = Host("corral/web", tui_data.frame(3))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


@pilot_test
async def test_through_corral_top_enter_opens_the_detail_and_frames_update_it() -> None:
    source = tui_data.FakeSource()
    app = CorralTop(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await _until(pilot, lambda: app.frame is not None)
        assert app.main.table.select_path("corral/web")
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, DetailScreen))
        screen = _detail(app)
        assert screen.cgroup == "corral/web"
        first = screen.frame
        source.advance()
        await _until(pilot, lambda: screen.frame is not first and screen.frame is app.frame)
        await pilot.press("2")
        table = screen.query_one(ProcessTable)
        await _until(pilot, lambda: table.row_count == 3)
        assert {p.command for p in table.rows_shown} == {
            "web --main",
            "web worker 1",
            "web worker 2",
        }
        await pilot.press("escape")
        assert app.screen is app.main


def test_on_this_hosts_kernel_the_detail_shows_a_busy_process_and_its_cpu(
    host: tuple[CgroupFS, str],
) -> None:
    """CorralTop over a LocalSource polling a real cgroup2 child holding a busy process:
    the detail screen's processes come from cgroup.procs and /proc, its CPU plot from
    cpu.stat (the hybrid host has no controllers, so no limits: none are drawn)."""
    fs, cgroup = host
    busy = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "while True: pass"],
        preexec_fn=lambda: fs.move(os.getpid(), cgroup),
    )
    source = LocalSource(fs, interval=0.2, audit_log=None, config=CollectorConfig(cgroup))

    @pilot_test
    async def drive() -> None:
        app = CorralTop(source)
        async with app.run_test(size=(100, 30)) as pilot:
            await _until(pilot, lambda: app.frame is not None)
            app.open_detail(cgroup)
            await _until(pilot, lambda: isinstance(app.screen, DetailScreen))
            screen = _detail(app)
            await pilot.press("2")
            table = screen.query_one(ProcessTable)
            await _until(pilot, lambda: busy.pid in [p.pid for p in table.rows_shown])
            row = next(p for p in table.rows_shown if p.pid == busy.pid)
            assert "while True" in row.command and row.rss_bytes > 0
            await pilot.press("1")
            cpu = screen.query_one("#plot-cpu", ChartPlot)
            await _until(pilot, lambda: bool(cpu.chart.lines[0].values), 10)
            # a busy loop: a good part of a core even on a loaded machine
            await _until(pilot, lambda: cpu.chart.lines[0].values[-1] > 0.1, 10)
            assert [line.label for line in cpu.chart.lines] == ["used"]

    try:
        drive()
    finally:
        busy.kill()
        busy.wait()


def test_process_sort_orders_numbers_biggest_first_text_a_to_z_ties_by_pid() -> None:
    rows = [
        ProcessRow(30, "root", "b", 100, 0.5),
        ProcessRow(10, "alice", "a", 300, 0.5),
        ProcessRow(20, "bob", "c", 200, 1.0),
    ]
    assert [p.pid for p in sort_processes(rows, "cpu")] == [20, 10, 30]  # tie 0.5: by pid
    assert [p.pid for p in sort_processes(rows, "cpu", True)] == [10, 30, 20]
    assert [p.pid for p in sort_processes(rows, "rss")] == [10, 20, 30]
    assert [p.user for p in sort_processes(rows, "user")] == ["alice", "bob", "root"]
    assert [p.pid for p in sort_processes(rows, "pid", True)] == [30, 20, 10]
    assert next_sort("cpu", False, "cpu") == ("cpu", True)
    assert next_sort("cpu", True, "rss") == ("rss", False)
    with pytest.raises(ValueError, match="process sort column 'mem': expected one of pid"):
        sort_processes(rows, "mem")
