"""The cpu controller: cpu.stat, cpu.max, cpu.max.burst, cpu.weight (cgroup-v2.rst "CPU").

cpu.stat's usage figures exist on every cgroup2 (even without the cpu controller); the
throttling figures and the limit files need the controller enabled in the parent.
Throttling counters cover this cgroup's own cpu.max only (cpu.stat.local for inherited).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from runtime.cgroupfs.errors import InvalidLimit, ParseError
from runtime.cgroupfs.formats import (
    MAX,
    IntOrMax,
    check_int,
    is_digits,
    parse_flat_keyed,
    parse_int,
)
from runtime.cgroupfs.fs import CgroupFS

PERIOD_MIN_US = 1_000  # the kernel's min_cfs_quota_period, 1 ms
PERIOD_MAX_US = 1_000_000  # max_cfs_quota_period, 1 s
QUOTA_MIN_US = 1_000  # min_cfs_quota_period again: a smaller quota is refused
QUOTA_MAX_US = (1 << 44) - 1  # max_cfs_runtime = MAX_BW * NSEC_PER_USEC, in us
DEFAULT_PERIOD_US = 100_000
WEIGHT_MIN, WEIGHT_MAX, WEIGHT_DEFAULT = 1, 10_000, 100


@dataclass(frozen=True, slots=True)
class CpuStat:
    """cpu.stat. Times in microseconds; throttling fields are None without the controller."""

    usage_usec: int
    user_usec: int
    system_usec: int
    nr_periods: int | None = None
    nr_throttled: int | None = None
    throttled_usec: int | None = None
    nr_bursts: int | None = None
    burst_usec: int | None = None


@dataclass(frozen=True, slots=True)
class CpuMax:
    """cpu.max: ``quota`` microseconds of CPU per ``period``, or unlimited (MAX)."""

    quota: IntOrMax
    period: int = DEFAULT_PERIOD_US

    @property
    def cores(self) -> float | None:
        """The limit in cores (quota / period); None when unlimited."""
        return None if self.quota is MAX else self.quota / self.period

    def __str__(self) -> str:
        return f"{self.quota} {self.period}"


_CPU_STAT_FIELDS = frozenset(f.name for f in fields(CpuStat))


def parse_cpu_stat(text: str, source: str = "cpu.stat") -> CpuStat:
    values = parse_flat_keyed(text, source)
    for key in ("usage_usec", "user_usec", "system_usec"):
        if key not in values:
            raise ParseError(source, text[:80], f"a '{key}' line")
    return CpuStat(**{k: v for k, v in values.items() if k in _CPU_STAT_FIELDS})


def parse_cpu_max(text: str, source: str = "cpu.max") -> CpuMax:
    words = text.split()
    if len(words) != 2 or not is_digits(words[1]):
        raise ParseError(source, text.strip(), "'QUOTA PERIOD' or 'max PERIOD'")
    quota: IntOrMax = MAX if words[0] == "max" else parse_int(words[0], source)
    return CpuMax(quota, int(words[1]))


def validate_cpu_max(value: CpuMax) -> CpuMax:
    if not PERIOD_MIN_US <= value.period <= PERIOD_MAX_US:
        raise InvalidLimit(
            "cpu.max", str(value), f"period must be {PERIOD_MIN_US}..{PERIOD_MAX_US} us"
        )
    if value.quota is not MAX and not QUOTA_MIN_US <= value.quota <= QUOTA_MAX_US:
        raise InvalidLimit(
            "cpu.max", str(value), f"quota must be 'max' or {QUOTA_MIN_US}..{QUOTA_MAX_US} us"
        )
    return value


def validate_cpu_weight(weight: int) -> int:
    allowed = f"an integer {WEIGHT_MIN}..{WEIGHT_MAX}"
    return check_int("cpu.weight", weight, WEIGHT_MIN, WEIGHT_MAX, allowed)


def validate_cpu_max_burst(burst: int) -> int:
    """The kernel also refuses a burst above the quota (EINVAL at write time)."""
    return check_int("cpu.max.burst", burst, 0, QUOTA_MAX_US, f"microseconds 0..{QUOTA_MAX_US}")


def read_cpu_stat(fs: CgroupFS, cgroup: str) -> CpuStat | None:
    return fs.read_as(cgroup, "cpu.stat", parse_cpu_stat)


def read_cpu_max(fs: CgroupFS, cgroup: str) -> CpuMax | None:
    return fs.read_as(cgroup, "cpu.max", parse_cpu_max)


def read_cpu_max_burst(fs: CgroupFS, cgroup: str) -> int | None:
    return fs.read_as(cgroup, "cpu.max.burst", parse_int)


def read_cpu_weight(fs: CgroupFS, cgroup: str) -> int | None:
    return fs.read_as(cgroup, "cpu.weight", parse_int)


def write_cpu_max(fs: CgroupFS, cgroup: str, value: CpuMax) -> None:
    fs.write(cgroup, "cpu.max", str(validate_cpu_max(value)))


def write_cpu_max_burst(fs: CgroupFS, cgroup: str, burst_usec: int) -> None:
    fs.write(cgroup, "cpu.max.burst", str(validate_cpu_max_burst(burst_usec)))


def write_cpu_weight(fs: CgroupFS, cgroup: str, weight: int) -> None:
    fs.write(cgroup, "cpu.weight", str(validate_cpu_weight(weight)))
