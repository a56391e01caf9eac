"""The core interface files every cgroup has: cgroup.events, cgroup.stat, cgroup.freeze."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.cgroupfs.formats import parse_flat_keyed
from runtime.cgroupfs.fs import CgroupFS


@dataclass(frozen=True, slots=True)
class CgroupEvents:
    """cgroup.events: ``populated`` (any process in the subtree), ``frozen`` (5.2+)."""

    populated: bool
    frozen: bool


@dataclass(frozen=True, slots=True)
class CgroupStat:
    """cgroup.stat: live and dying descendant cgroups."""

    nr_descendants: int
    nr_dying_descendants: int


def parse_cgroup_events(text: str, source: str = "cgroup.events") -> CgroupEvents:
    values = parse_flat_keyed(text, source)
    return CgroupEvents(
        populated=values.get("populated", 0) == 1, frozen=values.get("frozen", 0) == 1
    )


def parse_cgroup_stat(text: str, source: str = "cgroup.stat") -> CgroupStat:
    values = parse_flat_keyed(text, source)
    return CgroupStat(
        nr_descendants=values.get("nr_descendants", 0),
        nr_dying_descendants=values.get("nr_dying_descendants", 0),
    )


def read_cgroup_events(fs: CgroupFS, cgroup: str) -> CgroupEvents | None:
    return fs.read_as(cgroup, "cgroup.events", parse_cgroup_events)


def read_cgroup_stat(fs: CgroupFS, cgroup: str) -> CgroupStat | None:
    return fs.read_as(cgroup, "cgroup.stat", parse_cgroup_stat)
