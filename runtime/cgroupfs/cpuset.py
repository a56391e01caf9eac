"""The cpuset controller: cpuset.cpus and cpuset.mems in the kernel's list format."""

from __future__ import annotations

from runtime.cgroupfs.errors import InvalidLimit
from runtime.cgroupfs.formats import format_id_list, parse_id_list
from runtime.cgroupfs.fs import CgroupFS

FILES = ("cpuset.cpus", "cpuset.mems", "cpuset.cpus.effective", "cpuset.mems.effective")


def read_cpuset(fs: CgroupFS, cgroup: str, name: str) -> frozenset[int] | None:
    """One of cpuset.cpus, .mems (as requested) or their .effective (as granted)."""
    if name not in FILES:
        raise ValueError(f"cpuset file {name!r}: expected one of {FILES}")
    return fs.read_as(cgroup, name, parse_id_list)


def write_cpuset(fs: CgroupFS, cgroup: str, name: str, ids: frozenset[int]) -> None:
    """cpuset.cpus or cpuset.mems; an empty set means "inherit the parent's"."""
    if name not in FILES[:2]:
        raise InvalidLimit(
            name, sorted(map(str, ids)), "only cpuset.cpus and cpuset.mems are writable"
        )
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        raise InvalidLimit(name, sorted(map(str, ids)), "non-negative CPU or node numbers")
    fs.write(cgroup, name, format_id_list(ids) or "\n")
