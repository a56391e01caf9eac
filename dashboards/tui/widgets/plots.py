"""The detail screen's plots (textual-plotext): one ``ChartPlot`` per series.Chart, and
``Charts``, the four of them in a 2x2 grid that becomes one column of fixed-height plots on a
small terminal (the screen's ``-narrow``/``-short`` breakpoint classes), scrolled by its parent.

A plot is drawn at render time, when its size is known: the number of axis ticks follows the
plot's height and width. Usage lines take the theme's colour sequence (textual-plotext's
"auto" theme follows the app's light or dark theme); limit lines are drawn in fixed warm
colours that read on both.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult, RenderResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from dashboards.tui.series import Chart, axis_ticks, downsample, tick_label, time_label, time_ticks

# Limit lines: memory.high (orange) warns, memory.max and cpu.max (red) are the hard limits.
LIMIT_COLOURS = {"memory.high": (245, 130, 48), "memory.max": (230, 25, 75)}
DEFAULT_LIMIT_COLOUR = (230, 25, 75)
USAGE_COLOURS = ((0, 130, 200), (40, 160, 60), (190, 60, 200))


def y_range(chart: Chart) -> tuple[float, float]:
    """0 up to a quarter above the largest value (limits included), so a limit line shows
    above the usage it bounds and below the legend; 0..1 when every value is 0."""
    top = max((v for line in chart.lines for v in line.values), default=0.0)
    return 0.0, top * 1.25 if top > 0 else 1.0


def x_range(chart: Chart) -> tuple[float, float]:
    """The history window: the oldest point's time up to 0 (now); -1..0 with no points."""
    first = min((t for line in chart.lines for t in line.times), default=0.0)
    return (first, 0.0) if first < 0 else (-1.0, 0.0)


class ChartPlot(PlotextPlot):
    """One chart, redrawn whenever ``show`` gives it new figures."""

    DEFAULT_CSS = """
    ChartPlot { height: 1fr; min-height: 8; }
    """

    def __init__(self, chart: Chart, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.chart = chart

    def show(self, chart: Chart) -> None:
        if chart != self.chart:
            self.chart = chart
            self.refresh()

    def render(self) -> RenderResult:
        self._draw()
        return super().render()

    def _draw(self) -> None:
        plt, chart = self.plt, self.chart
        plt.clear_data()
        plt.clear_figure()
        title = chart.title if not chart.empty else f"{chart.title}: no data yet"
        plt.title(title)
        lo, hi = y_range(chart)
        plt.ylim(lo, hi)
        ticks = axis_ticks(lo, hi, chart.unit, max(2, min(5, (self.size.height - 3) // 2)))
        plt.yticks(ticks, [tick_label(t, chart.unit) for t in ticks])
        left, right = x_range(chart)
        plt.xlim(left, right)
        xticks = time_ticks(left, max(2, min(6, self.size.width // 14)))
        plt.xticks(xticks, [time_label(t) for t in xticks])
        usage = 0
        # A point every other cell: smooth enough, and plotext's cost grows with points.
        points = max(self.size.width // 2, 2)
        for line in (downsample(line, points) for line in chart.lines):
            if not line.values:
                continue
            if line.limit:
                colour = LIMIT_COLOURS.get(line.label, DEFAULT_LIMIT_COLOUR)
                plt.plot(line.times, line.values, label=line.label, color=colour, marker="-")
            else:
                colour = USAGE_COLOURS[usage % len(USAGE_COLOURS)]
                plt.plot(line.times, line.values, label=line.label, color=colour, marker="braille")
                usage += 1


class Charts(Grid):
    """The detail screen's four plots, by chart key: ``#plot-cpu``, ``#plot-memory``, ..."""

    DEFAULT_CSS = """
    Charts { grid-size: 2 2; grid-gutter: 0 1; height: 1fr; min-height: 16; }
    Screen.-narrow Charts, Screen.-short Charts { grid-size: 1; height: auto; }
    Screen.-narrow Charts ChartPlot, Screen.-short Charts ChartPlot { height: 11; }
    """

    def __init__(self, charts: Sequence[Chart], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial = tuple(charts)

    def compose(self) -> ComposeResult:
        for chart in self._initial:
            yield ChartPlot(chart, id=f"plot-{chart.key}")

    def show(self, charts: Sequence[Chart]) -> None:
        for chart in charts:
            self.query_one(f"#plot-{chart.key}", ChartPlot).show(chart)
