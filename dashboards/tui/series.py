"""Pure figures for the detail screen: a Frame's history -> the series of each plot, the
limits as text, and the axis ticks and labels the plots use.

Times are seconds relative to the newest snapshot (the last point is at 0, older ones are
negative), so the x axis reads "-60s ... now" whatever the wall clock. A figure the kernel did
not give (None: the first poll has no rates, a controller is not enabled) is left out of its
series rather than drawn as 0. A limit that is ``max`` at some instant has no point there: it
is no line at all, not a line at infinity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from dashboards.tui.rows import format_bytes, format_limit, format_percent
from monitor.model import CgroupModel
from monitor.sample import CgroupSample, Limits
from monitor.snapshot import Snapshot
from runtime.cgroupfs.formats import MAX, IntOrMax

# The units a chart's y axis is in; the tick labels follow them.
CORES, BYTES, BYTES_PER_SECOND, PERCENT = "cores", "bytes", "bytes/s", "%"


@dataclass(frozen=True, slots=True)
class Line:
    """One plotted series; ``limit`` lines are drawn apart from usage (a step of the limit)."""

    label: str
    times: tuple[float, ...]
    values: tuple[float, ...]
    limit: bool = False


@dataclass(frozen=True, slots=True)
class Chart:
    """One plot: its title, the unit of its y axis, its lines (usage first, then limits)."""

    key: str
    title: str
    unit: str
    lines: tuple[Line, ...]

    @property
    def empty(self) -> bool:
        return not any(line.values for line in self.lines)


def iec_bytes(value: float | None) -> str:
    """Bytes in IEC units as the main table shows them ("512B", "1.5Ki", "512Mi"); "-"."""
    return format_bytes(value)


def limit_bytes(value: IntOrMax | None) -> str:
    """A byte limit as shown: "max", "512Mi", or "-" when the file is absent."""
    return format_limit(value)


def percent(ratio: float | None) -> str:
    """A fraction as a percentage ("12%", "0.5%"), as the main table shows it; "-"."""
    return format_percent(ratio)


def cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def limit_rows(limits: Limits) -> list[tuple[str, str]]:
    """(kernel file, value as shown) for each limit file, in the kernel's naming."""
    cpu_max = limits.cpu_max
    if cpu_max is None:
        cpu = "-"
    elif cpu_max.quota is MAX:
        cpu = f"max (period {cpu_max.period}us)"
    else:
        cpu = f"{cores(cpu_max.cores)} cores ({cpu_max.quota} {cpu_max.period})"
    rows = [
        ("cpu.max", cpu),
        ("cpu.weight", "-" if limits.cpu_weight is None else str(limits.cpu_weight)),
        ("memory.min", limit_bytes(limits.memory_min)),
        ("memory.low", limit_bytes(limits.memory_low)),
        ("memory.high", limit_bytes(limits.memory_high)),
        ("memory.max", limit_bytes(limits.memory_max)),
        ("memory.swap.max", limit_bytes(limits.swap_max)),
    ]
    if limits.io_max is None:
        rows.append(("io.max", "-"))
    elif not limits.io_max:
        rows.append(("io.max", "max"))  # no line: no device is limited
    for device, io in sorted((limits.io_max or {}).items(), key=lambda kv: str(kv[0])):
        fields = (f"{k}={_io_limit(getattr(io, k), k)}" for k in ("rbps", "wbps", "riops", "wiops"))
        rows.append(("io.max", f"{device} {' '.join(fields)}"))
    pids = limits.pids_max
    rows.append(("pids.max", "-" if pids is None else str(pids)))
    return rows


def _io_limit(value: IntOrMax, key: str) -> str:
    if value is MAX:
        return "max"
    return iec_bytes(value) if key.endswith("bps") else str(value)


def charts(history: Sequence[Snapshot], cgroup: str) -> tuple[Chart, ...]:
    """The four plots of ``cgroup`` over ``history`` (oldest first): CPU, memory, io, PSI."""
    return (
        cpu_chart(history, cgroup),
        memory_chart(history, cgroup),
        io_chart(history, cgroup),
        pressure_chart(history, cgroup),
    )


def cpu_chart(history: Sequence[Snapshot], cgroup: str) -> Chart:
    """CPU used in cores against cpu.max's quota in cores (quota / period)."""
    return Chart(
        "cpu",
        "CPU (cores)",
        CORES,
        _drop_empty_limits(
            _model_line(history, cgroup, "used", lambda m: m.cpu_cores),
            _sample_line(history, cgroup, "cpu.max", _quota_cores, limit=True),
        ),
    )


def memory_chart(history: Sequence[Snapshot], cgroup: str) -> Chart:
    """Working set and memory.current against memory.high and memory.max."""
    return Chart(
        "memory",
        "Memory",
        BYTES,
        _drop_empty_limits(
            _model_line(history, cgroup, "working set", lambda m: m.working_set_bytes),
            _sample_line(history, cgroup, "memory.current", lambda s: s.memory_current),
            _sample_line(history, cgroup, "memory.high", _limit(lambda s: s.memory_high), True),
            _sample_line(history, cgroup, "memory.max", _limit(lambda s: s.memory_max), True),
        ),
    )


def io_chart(history: Sequence[Snapshot], cgroup: str) -> Chart:
    """Bytes read and written per second, summed over devices (io.stat)."""
    return Chart(
        "io",
        "IO",
        BYTES_PER_SECOND,
        (
            _model_line(history, cgroup, "read", lambda m: m.io_read_bytes_per_second),
            _model_line(history, cgroup, "write", lambda m: m.io_write_bytes_per_second),
        ),
    )


def pressure_chart(history: Sequence[Snapshot], cgroup: str) -> Chart:
    """Share of wall time some task stalled on cpu, memory, io (*.pressure totals)."""

    def pct(get: Callable[[CgroupModel], float | None]) -> Callable[[CgroupModel], float | None]:
        return lambda m: None if (v := get(m)) is None else v * 100

    return Chart(
        "pressure",
        "Pressure some (%)",
        PERCENT,
        (
            _model_line(history, cgroup, "cpu", pct(lambda m: m.pressure_cpu_some)),
            _model_line(history, cgroup, "memory", pct(lambda m: m.pressure_memory_some)),
            _model_line(history, cgroup, "io", pct(lambda m: m.pressure_io_some)),
        ),
    )


def summary(snapshot: Snapshot, cgroup: str) -> str:
    """One line of the cgroup's figures now: CPU against cpu.max, memory against its
    limits, pids against pids.max."""
    sample = snapshot.sample.cgroups.get(cgroup)
    if sample is None:
        return "gone: not in the latest poll"
    model = snapshot.models[cgroup]
    quota = _quota_cores(sample)
    cpu = f"CPU {cores(model.cpu_cores)}"
    if quota is not None:
        cpu += f" of {cores(quota)} ({percent(model.cpu_limit_ratio)})"
    mem = f"mem {iec_bytes(model.working_set_bytes)} ws, {iec_bytes(sample.memory_current)} cur"
    mem += f", high {limit_bytes(sample.limits.memory_high)}"
    mem += f", max {limit_bytes(sample.limits.memory_max)}"
    pids = "-" if sample.pids_current is None else str(sample.pids_current)
    pids_max = "-" if sample.limits.pids_max is None else str(sample.limits.pids_max)
    return f"{cpu} · {mem} · pids {pids}/{pids_max} · throttled {percent(model.throttled_ratio)}"


def _quota_cores(sample: CgroupSample) -> float | None:
    cpu_max = sample.limits.cpu_max
    return None if cpu_max is None else cpu_max.cores


def _limit(
    get: Callable[[Limits], IntOrMax | None],
) -> Callable[[CgroupSample], float | None]:
    def value(sample: CgroupSample) -> float | None:
        limit = get(sample.limits)
        return None if limit is None or limit is MAX else float(limit)

    return value


def _drop_empty_limits(*lines: Line) -> tuple[Line, ...]:
    """A limit that was never set (max or absent throughout) draws no line and no legend."""
    return tuple(line for line in lines if line.values or not line.limit)


def _collect(
    history: Sequence[Snapshot], get: Callable[[Snapshot], float | None]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not history:
        return (), ()
    newest = history[-1].sample.wall_time
    times: list[float] = []
    values: list[float] = []
    for snap in history:
        value = get(snap)
        if value is not None and math.isfinite(value):
            times.append(snap.sample.wall_time - newest)
            values.append(float(value))
    return tuple(times), tuple(values)


def _model_line(
    history: Sequence[Snapshot],
    cgroup: str,
    label: str,
    get: Callable[[CgroupModel], float | int | None],
) -> Line:
    def one(snap: Snapshot) -> float | None:
        if cgroup not in snap.models:
            return None
        value = get(snap.models[cgroup])
        return None if value is None else float(value)

    return Line(label, *_collect(history, one))


def _sample_line(
    history: Sequence[Snapshot],
    cgroup: str,
    label: str,
    get: Callable[[CgroupSample], float | int | None],
    limit: bool = False,
) -> Line:
    def one(snap: Snapshot) -> float | None:
        sample = snap.sample.cgroups.get(cgroup)
        value = None if sample is None else get(sample)
        return None if value is None else float(value)

    return Line(label, *_collect(history, one), limit=limit)


def simplify(line: Line) -> Line:
    """``line`` without the points inside a run of equal values (a limit is mostly flat):
    the same picture, and plotext's cost grows with the points it joins."""
    vs = line.values
    keep = [
        i for i in range(len(vs)) if i in (0, len(vs) - 1) or not vs[i - 1] == vs[i] == vs[i + 1]
    ]
    if len(keep) == len(vs):
        return line
    return replace(
        line, times=tuple(line.times[i] for i in keep), values=tuple(vs[i] for i in keep)
    )


def downsample(line: Line, points: int) -> Line:
    """``line`` simplified, then with at most ``points`` points: consecutive points are
    merged into one at the last one's time with the largest value, so a spike (or a limit
    step) still shows. A plot needs no more points than it has cells across."""
    if points < 1:
        raise ValueError(f"downsample to {points} points: expected at least 1")
    line = simplify(line)
    count = len(line.values)
    if count <= points:
        return line
    times: list[float] = []
    values: list[float] = []
    for bucket in range(points):
        lo, hi = bucket * count // points, (bucket + 1) * count // points
        times.append(line.times[hi - 1])
        values.append(max(line.values[lo:hi]))
    return replace(line, times=tuple(times), values=tuple(values))


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values within low..high: steps of 1, 2, 2.5 or 5 times a power
    of ten."""
    if count < 2:
        raise ValueError(f"tick count {count}: expected at least 2")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range {low}..{high}: expected finite numbers")
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    # The round step nearest the raw one (by ratio), so the count comes out close to asked.
    step = min((m * power for m in (1, 2, 2.5, 5, 10)), key=lambda v: abs(math.log(v / raw)))
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def axis_ticks(low: float, high: float, unit: str, count: int = 4) -> list[float]:
    """Ticks for an axis in ``unit``: byte axes step in round numbers of the IEC unit the
    top of the range is in (256Mi, 512Mi, ...), others in round decimal numbers."""
    if unit not in (BYTES, BYTES_PER_SECOND) or high < 1024:
        return nice_ticks(low, high, count)
    scale = 1024 ** min(int(math.log(high, 1024)), 6)
    return [t * scale for t in nice_ticks(low / scale, high / scale, count)]


# Round steps of a time axis, in seconds.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


def time_ticks(oldest: float, count: int = 4) -> list[float]:
    """About ``count`` ticks from ``oldest`` (seconds, <= 0) to now, at whole multiples of a
    round step (5s, 30s, 5m, ...) counted back from 0, so "now" is always one."""
    if count < 2:
        raise ValueError(f"tick count {count}: expected at least 2")
    span = max(-oldest, 1.0)
    raw = span / (count - 1)
    step = min(_TIME_STEPS, key=lambda v: abs(math.log(v / raw)))
    return [float(-k * step) for k in range(int(span // step), -1, -1)]


def tick_label(value: float, unit: str) -> str:
    """A y tick in the chart's unit: "0.25" cores, "512Mi" bytes, "1.5Mi/s", "40%"."""
    if unit == BYTES:
        return iec_bytes(value)
    if unit == BYTES_PER_SECOND:
        return iec_bytes(value) + "/s"
    if unit == PERCENT:
        return f"{value:g}%"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"


def time_label(seconds: float) -> str:
    """An x tick: "now" at 0, "-30s", "-5m", "-1h30m" before it."""
    if abs(seconds) < 0.5:
        return "now"
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        text = f"{hours}h{minutes}m" if minutes else f"{hours}h"
    elif minutes:
        text = f"{minutes}m{secs}s" if secs else f"{minutes}m"
    else:
        text = f"{secs}s"
    return ("-" if seconds < 0 else "+") + text
