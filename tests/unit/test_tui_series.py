"""The detail screen's pure figures: history -> plot series, limits as text, axis ticks."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import tui_data
from tui_data import GI, MI, SPECS

from dashboards.tui.series import (
    BYTES,
    BYTES_PER_SECOND,
    CORES,
    PERCENT,
    Line,
    axis_ticks,
    charts,
    cpu_chart,
    downsample,
    io_chart,
    limit_rows,
    memory_chart,
    nice_ticks,
    pressure_chart,
    simplify,
    summary,
    tick_label,
    time_label,
    time_ticks,
)
from monitor.sample import Limits
from monitor.snapshot import build_snapshot
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoMax


def _line(lines: tuple[Line, ...], label: str) -> Line:
    return next(line for line in lines if line.label == label)


def _labels(lines: tuple[Line, ...]) -> list[str]:
    return [line.label for line in lines]


def test_cpu_chart_plots_cores_against_the_quota_in_cores() -> None:
    history = tui_data.frame(10).history
    chart = cpu_chart(history, "corral/web")
    assert chart.unit == CORES
    used, quota = _line(chart.lines, "used"), _line(chart.lines, "cpu.max")
    assert used.times == tuple(float(t) for t in range(-9, 1))
    assert used.values == pytest.approx([0.48] * 10)
    assert not used.limit and quota.limit
    assert quota.values == pytest.approx([0.5] * 10)  # 50000 / 100000


def test_a_limit_that_is_max_or_absent_draws_no_line() -> None:
    history = tui_data.frame(5).history
    assert _labels(cpu_chart(history, "corral/db").lines) == ["used"]  # cpu.max "max 100000"
    assert _labels(cpu_chart(history, "").lines) == ["used"]  # the root has no cpu.max
    batch = memory_chart(history, "corral/batch")  # memory.max max, memory.high 256Mi
    assert _labels(batch.lines) == ["working set", "memory.current", "memory.high"]


def test_memory_chart_has_working_set_current_high_and_max() -> None:
    chart = memory_chart(tui_data.frame(3).history, "corral/web")
    assert chart.unit == BYTES
    assert _labels(chart.lines) == ["working set", "memory.current", "memory.high", "memory.max"]
    # working set = memory.current - inactive_file (a quarter of it in the fixture)
    assert _line(chart.lines, "working set").values == (448 * MI * 3 / 4,) * 3
    assert _line(chart.lines, "memory.current").values == (448 * MI,) * 3
    assert _line(chart.lines, "memory.high").values == (512 * MI,) * 3
    assert _line(chart.lines, "memory.max").values == (GI,) * 3


def test_io_and_pressure_charts() -> None:
    history = tui_data.frame(4).history
    io = io_chart(history, "corral/batch")
    assert io.unit == BYTES_PER_SECOND
    assert _line(io.lines, "read").values == pytest.approx([3 * MI] * 4)
    assert _line(io.lines, "write").values == pytest.approx([8 * MI] * 4)
    psi = pressure_chart(history, "corral/batch")
    assert psi.unit == PERCENT
    assert _line(psi.lines, "memory").values == pytest.approx([12.5] * 4)
    assert _line(psi.lines, "cpu").values == pytest.approx([0.0] * 4)
    assert [c.key for c in charts(history, "corral/batch")] == ["cpu", "memory", "io", "pressure"]


def test_the_first_poll_has_no_rate_and_is_left_out_not_zero() -> None:
    first = build_snapshot(
        None, tui_data.host_sample(0), seq=1, names=tui_data.NAMES, collect_seconds=0.0
    )
    second = build_snapshot(
        tui_data.host_sample(0),
        tui_data.host_sample(1),
        seq=2,
        names=tui_data.NAMES,
        collect_seconds=0.0,
    )
    chart = cpu_chart([first, second], "corral/web")
    assert _line(chart.lines, "used").times == (0.0,)
    # memory.current is a point-in-time figure: the first poll has it
    assert (
        len(_line(memory_chart([first, second], "corral/web").lines, "memory.current").values) == 2
    )


def test_a_cgroup_that_vanished_keeps_its_past_points_relative_to_now() -> None:
    without_web = [s for s in SPECS if s.name.path != "corral/web"]
    history = tui_data.snapshots(4) + tui_data.snapshots(3, first_step=4, specs=without_web)
    used = _line(cpu_chart(history, "corral/web").lines, "used")
    assert used.times == (-6.0, -5.0, -4.0, -3.0)
    assert cpu_chart(history, "no/such").empty
    assert summary(history[-1], "corral/web") == "gone: not in the latest poll"


def test_a_limit_the_enforcer_changed_shows_as_a_step() -> None:
    web = next(s for s in SPECS if s.name.path == "corral/web")
    squeezed = replace(web, limits=replace(web.limits, memory_high=384 * MI))
    others = [s for s in SPECS if s is not web]
    history = tui_data.snapshots(2) + tui_data.snapshots(2, first_step=2, specs=[*others, squeezed])
    high = _line(memory_chart(history, "corral/web").lines, "memory.high")
    assert high.values == (512 * MI, 512 * MI, 384 * MI, 384 * MI)


def test_empty_history_gives_empty_charts() -> None:
    assert all(chart.empty for chart in charts([], "corral/web"))


def test_limit_rows_show_max_as_max_and_absent_files_as_dash() -> None:
    web = dict(limit_rows(next(s for s in SPECS if s.name.path == "corral/web").limits))
    assert web["cpu.max"] == "0.50 cores (50000 100000)"
    assert web["memory.high"] == "512Mi"
    assert web["memory.max"] == "1Gi"
    assert web["pids.max"] == "100"
    assert web["cpu.weight"] == web["memory.min"] == web["io.max"] == "-"
    unlimited = Limits(
        cpu_max=CpuMax(MAX, 100_000),
        cpu_weight=100,
        memory_min=0,
        memory_low=0,
        memory_high=MAX,
        memory_max=MAX,
        swap_max=MAX,
        io_max={},
        pids_max=MAX,
    )
    rows = dict(limit_rows(unlimited))
    assert rows["cpu.max"] == "max (period 100000us)"
    assert rows["cpu.weight"] == "100"
    assert rows["memory.min"] == "0B"
    assert rows["memory.high"] == rows["memory.max"] == rows["memory.swap.max"] == "max"
    assert rows["io.max"] == rows["pids.max"] == "max"


def test_limit_rows_list_each_io_max_device() -> None:
    io_max = {
        Device(259, 0): IoMax(wiops=100),
        Device(8, 0): IoMax(rbps=MI, wbps=2 * MI),
    }
    rows = [v for k, v in limit_rows(Limits(io_max=io_max)) if k == "io.max"]
    assert rows == [
        "259:0 rbps=max wbps=max riops=max wiops=100",
        "8:0 rbps=1Mi wbps=2Mi riops=max wiops=max",
    ]


def test_summary_puts_usage_beside_limits() -> None:
    snap = tui_data.frame(2).snapshot
    text = summary(snap, "corral/web")
    assert "CPU 0.48 of 0.50 (96%)" in text
    assert "high 512Mi" in text and "max 1Gi" in text
    assert "pids 24/100" in text and "throttled 30%" in text
    assert "CPU 0.22 ·" in summary(snap, "corral/db")  # cpu.max max: no "of"


@pytest.mark.parametrize(
    ("low", "high", "count"),
    [(0, 0.55, 3), (0, 1, 4), (-29, 0, 3), (-899, 0, 6), (0, 1.1 * GI, 4), (3, 7, 5), (0, 1e-4, 3)],
)
def test_nice_ticks_are_round_evenly_spaced_and_inside_the_range(
    low: float, high: float, count: int
) -> None:
    ticks = nice_ticks(low, high, count)
    assert 2 <= len(ticks) <= 2 * count
    assert all(low - 1e-9 <= t <= high + 1e-9 for t in ticks)
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 2.5, 5, 10)


def test_nice_ticks_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="tick count 1"):
        nice_ticks(0, 1, 1)
    with pytest.raises(ValueError, match="expected finite"):
        nice_ticks(0, math.inf, 3)
    assert nice_ticks(5, 5, 3)  # a flat series still gets an axis


def test_byte_axes_step_in_iec_units() -> None:
    ticks = axis_ticks(0, 1.1 * GI, BYTES, 4)
    assert [tick_label(t, BYTES) for t in ticks] == ["0B", "512Mi", "1Gi"]
    ticks = axis_ticks(0, 300 * MI, BYTES_PER_SECOND, 4)
    assert all(t % MI == 0 for t in ticks)
    assert tick_label(ticks[1], BYTES_PER_SECOND).endswith("Mi/s")
    assert axis_ticks(0, 0.55, CORES, 3) == [0, 0.25, 0.5]


def test_tick_and_time_labels() -> None:
    assert tick_label(0.25, CORES) == "0.25"
    assert tick_label(12.5, PERCENT) == "12.5%"
    assert [time_label(t) for t in (0, -30, -90, -300, -5400, -7200)] == [
        "now",
        "-30s",
        "-1m30s",
        "-5m",
        "-1h30m",
        "-2h",
    ]


def test_simplify_keeps_the_ends_of_each_flat_run() -> None:
    line = Line("memory.high", (-4, -3, -2, -1, 0), (5.0, 5.0, 5.0, 3.0, 3.0), limit=True)
    assert simplify(line) == Line("memory.high", (-4, -2, -1, 0), (5.0, 5.0, 3.0, 3.0), True)
    varied = Line("used", (-1, 0), (1.0, 2.0))
    assert simplify(varied) is varied


def test_downsample_keeps_peaks_and_the_newest_time() -> None:
    times = tuple(float(t) for t in range(-899, 1))
    values = tuple(float(t % 7) for t in range(900))
    spiked = (*values[:450], 99.0, *values[451:])
    line = downsample(Line("used", times, spiked), 40)
    assert len(line.values) == 40
    assert line.times[-1] == 0.0 and max(line.values) == 99.0
    assert list(line.times) == sorted(line.times)
    short = Line("used", (-1.0, 0.0), (1.0, 2.0))
    assert downsample(short, 40) is short
    with pytest.raises(ValueError, match="downsample to 0 points"):
        downsample(short, 0)


@pytest.mark.parametrize(
    ("oldest", "count", "expected"),
    [
        (-9, 4, [-8, -6, -4, -2, 0]),
        (-29, 3, [-15, 0]),
        (-3600, 5, [-3600, -2700, -1800, -900, 0]),
        (0, 4, [-1, 0]),
    ],
)
def test_time_ticks_count_back_from_now_in_round_steps(
    oldest: float, count: int, expected: list[float]
) -> None:
    assert time_ticks(oldest, count) == expected
    assert [time_label(t) for t in time_ticks(-899, 6)][-2:] == ["-2m", "now"]
