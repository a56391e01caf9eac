"""The model: figures derived from two samples of the same cgroup (rates and ratios).

below's Model(prev, dt): a counter's rate needs the previous sample; a counter that went
backwards (the cgroup was removed and re-created under the same path) gives no rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.sample import CgroupSample


@dataclass(frozen=True, slots=True)
class CgroupModel:
    """Rates over the interval between two polls, plus point-in-time derived figures.

    cpu_cores: CPU time used per wall second (1.0 = one core busy); cpu_limit_ratio: that
    over cpu.max's cores; throttled_ratio: throttled periods / elapsed periods (cpu.stat);
    working_set_bytes: memory.current - inactive_file (cAdvisor's definition, stated as such);
    io_*: bytes and operations per second summed over devices (io.stat); pressure_*: the
    fraction of wall time some/full tasks stalled, from the *.pressure ``total`` counters.
    """

    path: str
    interval_seconds: float | None = None
    cpu_cores: float | None = None
    cpu_user_cores: float | None = None
    cpu_system_cores: float | None = None
    cpu_limit_ratio: float | None = None
    throttled_ratio: float | None = None
    working_set_bytes: int | None = None
    io_read_bytes_per_second: float | None = None
    io_write_bytes_per_second: float | None = None
    io_read_ops_per_second: float | None = None
    io_write_ops_per_second: float | None = None
    pressure_cpu_some: float | None = None
    pressure_memory_some: float | None = None
    pressure_memory_full: float | None = None
    pressure_io_some: float | None = None
    pressure_io_full: float | None = None


def working_set(sample: CgroupSample) -> int | None:
    """memory.current - inactive_file (never below 0), as cAdvisor and the kubelet count it."""
    if sample.memory_current is None:
        return None
    inactive = (sample.memory_stat or {}).get("inactive_file", 0)
    return max(sample.memory_current - inactive, 0)


def build_model(prev: CgroupSample | None, cur: CgroupSample, dt: float | None) -> CgroupModel:
    """The model of ``cur``; rates need ``prev`` (same path) and the seconds between them."""
    if prev is None or dt is None or dt <= 0:
        return CgroupModel(path=cur.path, working_set_bytes=working_set(cur))
    return _with_rates(prev, cur, dt)


def _rate(before: int | None, after: int | None, per: float) -> float | None:
    if before is None or after is None or after < before:
        return None
    return (after - before) / per


def _with_rates(prev: CgroupSample, cur: CgroupSample, dt: float) -> CgroupModel:
    usec = dt * 1e6
    cpu_cores = cpu_user = cpu_system = limit_ratio = throttled = None
    if prev.cpu and cur.cpu:
        cpu_cores = _rate(prev.cpu.usage_usec, cur.cpu.usage_usec, usec)
        cpu_user = _rate(prev.cpu.user_usec, cur.cpu.user_usec, usec)
        cpu_system = _rate(prev.cpu.system_usec, cur.cpu.system_usec, usec)
        throttled = _throttled_ratio(prev, cur)
    cores_limit = cur.limits.cpu_max.cores if cur.limits.cpu_max else None
    if cpu_cores is not None and cores_limit:
        limit_ratio = cpu_cores / cores_limit
    return CgroupModel(
        path=cur.path,
        working_set_bytes=working_set(cur),
        interval_seconds=dt,
        cpu_cores=cpu_cores,
        cpu_user_cores=cpu_user,
        cpu_system_cores=cpu_system,
        cpu_limit_ratio=limit_ratio,
        throttled_ratio=throttled,
        io_read_bytes_per_second=_io_rate(prev, cur, "rbytes", dt),
        io_write_bytes_per_second=_io_rate(prev, cur, "wbytes", dt),
        io_read_ops_per_second=_io_rate(prev, cur, "rios", dt),
        io_write_ops_per_second=_io_rate(prev, cur, "wios", dt),
        pressure_cpu_some=_stall_ratio(prev, cur, "cpu", "some", usec),
        pressure_memory_some=_stall_ratio(prev, cur, "memory", "some", usec),
        pressure_memory_full=_stall_ratio(prev, cur, "memory", "full", usec),
        pressure_io_some=_stall_ratio(prev, cur, "io", "some", usec),
        pressure_io_full=_stall_ratio(prev, cur, "io", "full", usec),
    )


def _throttled_ratio(prev: CgroupSample, cur: CgroupSample) -> float | None:
    """Throttled periods over elapsed periods of this cgroup's own cpu.max (cpu.stat)."""
    assert prev.cpu and cur.cpu
    periods = _rate(prev.cpu.nr_periods, cur.cpu.nr_periods, 1.0)
    throttled = _rate(prev.cpu.nr_throttled, cur.cpu.nr_throttled, 1.0)
    if periods is None or throttled is None:
        return None
    return throttled / periods if periods else 0.0


def _io_rate(prev: CgroupSample, cur: CgroupSample, counter: str, dt: float) -> float | None:
    """One io.stat counter per second, summed over devices."""
    if prev.io is None or cur.io is None:
        return None
    if prev.io is cur.io:  # the collector shares an unchanged io.stat: no io at all
        return 0.0
    before = sum(getattr(s, counter) for s in prev.io.values())
    after = sum(getattr(s, counter) for s in cur.io.values())
    return _rate(before, after, dt)


def _stall_ratio(
    prev: CgroupSample, cur: CgroupSample, resource: str, line: str, usec: float
) -> float | None:
    """Stalled microseconds per elapsed microsecond, from a *.pressure ``total``."""
    a, b = prev.pressure.get(resource), cur.pressure.get(resource)
    line_a = getattr(a, line) if a else None
    line_b = getattr(b, line) if b else None
    if line_a is None or line_b is None:
        return None
    return _rate(line_a.total_usec, line_b.total_usec, usec)
