"""The memory controller (cgroup-v2.rst "Memory").

memory.max below current usage reclaims and then OOM-kills; memory.high throttles and
reclaims but never kills, so it is what an enforcer lowers to squeeze. A write to memory.high
can block in reclaim: it is written with O_NONBLOCK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runtime.cgroupfs.errors import InvalidLimit
from runtime.cgroupfs.formats import (
    MAX,
    IntOrMax,
    check_int_or_max,
    format_int_or_max,
    parse_flat_keyed,
    parse_int,
    parse_int_or_max,
)
from runtime.cgroupfs.fs import CgroupFS

# The limit files that take a byte count or "max".
LIMIT_FILES = ("memory.min", "memory.low", "memory.high", "memory.max", "memory.swap.max")
BYTES_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class MemoryEvents:
    """memory.events: how often each boundary was hit (hierarchical counts)."""

    low: int
    high: int
    max: int
    oom: int
    oom_kill: int
    oom_group_kill: int | None = None  # since Linux 5.17


def parse_memory_stat(text: str, source: str = "memory.stat") -> Mapping[str, int]:
    """memory.stat: bytes (and event counts) by key; the key set varies by kernel."""
    return parse_flat_keyed(text, source)


def parse_memory_events(text: str, source: str = "memory.events") -> MemoryEvents:
    values = parse_flat_keyed(text, source)
    return MemoryEvents(
        low=values.get("low", 0),
        high=values.get("high", 0),
        max=values.get("max", 0),
        oom=values.get("oom", 0),
        oom_kill=values.get("oom_kill", 0),
        oom_group_kill=values.get("oom_group_kill"),
    )


def parse_oom_group(text: str, source: str = "memory.oom.group") -> bool:
    return parse_int(text, source) != 0


def validate_memory_limit(name: str, value: IntOrMax) -> IntOrMax:
    if name not in LIMIT_FILES:
        raise InvalidLimit(name, value, f"one of {', '.join(LIMIT_FILES)}")
    return check_int_or_max(name, value, 0, BYTES_MAX, "a byte count >= 0 or 'max'")


def read_memory_current(fs: CgroupFS, cgroup: str) -> int | None:
    return fs.read_as(cgroup, "memory.current", parse_int)


def read_memory_peak(fs: CgroupFS, cgroup: str) -> int | None:
    """memory.peak (since Linux 5.19): the highest memory.current recorded."""
    return fs.read_as(cgroup, "memory.peak", parse_int)


def read_memory_swap_current(fs: CgroupFS, cgroup: str) -> int | None:
    return fs.read_as(cgroup, "memory.swap.current", parse_int)


def read_memory_stat(fs: CgroupFS, cgroup: str) -> Mapping[str, int] | None:
    return fs.read_as(cgroup, "memory.stat", parse_memory_stat)


def read_memory_events(fs: CgroupFS, cgroup: str) -> MemoryEvents | None:
    return fs.read_as(cgroup, "memory.events", parse_memory_events)


def read_memory_limit(fs: CgroupFS, cgroup: str, name: str) -> IntOrMax | None:
    """One of memory.min, .low, .high, .max, .swap.max."""
    validate_memory_limit(name, MAX)
    return fs.read_as(cgroup, name, parse_int_or_max)


def read_memory_oom_group(fs: CgroupFS, cgroup: str) -> bool | None:
    return fs.read_as(cgroup, "memory.oom.group", parse_oom_group)


def write_memory_limit(fs: CgroupFS, cgroup: str, name: str, value: IntOrMax) -> None:
    """Write one memory limit; memory.high without blocking the writer in reclaim."""
    text = format_int_or_max(validate_memory_limit(name, value))
    fs.write(cgroup, name, text, nonblock=name == "memory.high")


def write_memory_oom_group(fs: CgroupFS, cgroup: str, enabled: bool) -> None:
    if not isinstance(enabled, bool):
        raise InvalidLimit("memory.oom.group", enabled, "True or False")
    fs.write(cgroup, "memory.oom.group", "1" if enabled else "0")
