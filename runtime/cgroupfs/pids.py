"""The pids controller (cgroup-v2.rst "PID"): over pids.max, fork and clone fail with
EAGAIN and pids.events' ``max`` counts each refusal."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.cgroupfs.formats import (
    IntOrMax,
    check_int_or_max,
    format_int_or_max,
    parse_flat_keyed,
    parse_int,
    parse_int_or_max,
)
from runtime.cgroupfs.fs import CgroupFS

PIDS_LIMIT = 4_194_304  # PID_MAX_LIMIT on 64-bit


@dataclass(frozen=True, slots=True)
class PidsEvents:
    """pids.events: ``max`` = forks refused here or above; ``max_imposed`` (6.13+) here."""

    max: int
    max_imposed: int | None = None


def parse_pids_events(text: str, source: str = "pids.events") -> PidsEvents:
    values = parse_flat_keyed(text, source)
    return PidsEvents(max=values.get("max", 0), max_imposed=values.get("max.imposed"))


def validate_pids_max(value: IntOrMax) -> IntOrMax:
    allowed = f"a count 0..{PIDS_LIMIT} or 'max'"
    return check_int_or_max("pids.max", value, 0, PIDS_LIMIT, allowed)


def read_pids_current(fs: CgroupFS, cgroup: str) -> int | None:
    return fs.read_as(cgroup, "pids.current", parse_int)


def read_pids_peak(fs: CgroupFS, cgroup: str) -> int | None:
    return fs.read_as(cgroup, "pids.peak", parse_int)


def read_pids_max(fs: CgroupFS, cgroup: str) -> IntOrMax | None:
    return fs.read_as(cgroup, "pids.max", parse_int_or_max)


def read_pids_events(fs: CgroupFS, cgroup: str) -> PidsEvents | None:
    return fs.read_as(cgroup, "pids.events", parse_pids_events)


def write_pids_max(fs: CgroupFS, cgroup: str, value: IntOrMax) -> None:
    fs.write(cgroup, "pids.max", format_int_or_max(validate_pids_max(value)))
