"""Where cgroups are mounted: /proc/self/mountinfo parsed, the layout classified.

A host can be unified (cgroup2 alone), hybrid (cgroup2 beside v1 controller hierarchies,
systemd's "hybrid" mode, as on corral's build machines) or legacy (v1 only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Controllers that can be bound to a v1 hierarchy (Documentation/admin-guide/cgroup-v1/):
# any other word among a v1 mount's super options is a mount option (rw, clone_children,
# name=systemd, release_agent=...), not a controller.
_V1_NAMES = "cpu cpuacct cpuset memory devices freezer net_cls net_prio blkio perf_event hugetlb"
V1_CONTROLLERS = frozenset([*_V1_NAMES.split(), "pids", "rdma", "misc", "debug"])

# The v2 controller each v1 controller becomes: a controller bound to a v1 hierarchy is
# missing from every cgroup2 cgroup.controllers (cgroup-v2.rst "Support for Multiple
# Hierarchies"). blkio is v2's io; cpu and cpuacct are both parts of v2's cpu.
V1_TO_V2 = {"blkio": "io", "cpuacct": "cpu"}

LayoutKind = Literal["unified", "hybrid", "legacy", "none"]


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo (proc(5))."""

    mount_id: int
    parent_id: int
    root: str  # the directory of the filesystem mounted here ("/" unless a bind mount)
    mountpoint: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """unified: cgroup2 alone; hybrid: cgroup2 beside v1 controller hierarchies (systemd's
    "hybrid" mode); legacy: v1 only; none: no cgroup filesystem mounted at all."""

    kind: LayoutKind
    cgroup2_mount: str | None
    v1_controllers: dict[str, str] = field(default_factory=dict)  # v1 name -> mountpoint

    def v1_mounts_of(self, v2_controller: str) -> dict[str, str]:
        """The v1 hierarchies holding ``v2_controller`` (by its v2 name): v1 name -> mount."""
        return {
            name: mountpoint
            for name, mountpoint in sorted(self.v1_controllers.items())
            if V1_TO_V2.get(name, name) == v2_controller
        }


def parse_mountinfo(text: str) -> list[Mount]:
    """Lines "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".

    The optional fields (shared:N, master:N) vary in number, so the line is split at the
    lone "-". Paths escape space, tab, newline and backslash as octal (\\040).
    """
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head, sep, tail = line.partition(" - ")
        left, right = head.split(), tail.split()
        if not sep or len(left) < 6 or len(right) < 2:
            raise ValueError(f"mountinfo: cannot parse {line!r}")
        mounts.append(
            Mount(
                mount_id=int(left[0]),
                parent_id=int(left[1]),
                root=_unescape(left[3]),
                mountpoint=_unescape(left[4]),
                options=tuple(left[5].split(",")),
                fstype=right[0],
                source=_unescape(right[1]),
                super_options=tuple(right[2].split(",")) if len(right) > 2 else (),
            )
        )
    return mounts


def _unescape(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def cgroup_mounts(mounts: list[Mount]) -> list[Mount]:
    return [m for m in mounts if m.fstype in ("cgroup", "cgroup2")]


def cgroup_layout(mounts: list[Mount]) -> Layout:
    """Classify the cgroup mounts. Of several cgroup2 mounts (bind mounts into containers),
    prefer a whole-hierarchy one at the usual places: /sys/fs/cgroup, then .../unified."""
    v1: dict[str, str] = {}
    for m in mounts:
        if m.fstype == "cgroup":
            for opt in m.super_options:
                if opt in V1_CONTROLLERS:
                    v1.setdefault(opt, m.mountpoint)
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    usual = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
    v2.sort(
        key=lambda m: (m.root != "/", usual.index(m.mountpoint) if m.mountpoint in usual else 2)
    )
    cgroup2 = v2[0].mountpoint if v2 else None
    if cgroup2 is None:
        return Layout("legacy" if v1 else "none", None, v1)
    return Layout("hybrid" if v1 else "unified", cgroup2, v1)


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[Mount]:
    """/proc/self/mountinfo: the mounts as this process (and its mount namespace) sees them."""
    return parse_mountinfo(Path(path).read_text())


def find_cgroup2(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The mount point of the cgroup2 hierarchy this process sees, or None."""
    return cgroup_layout(read_mountinfo(mountinfo)).cgroup2_mount
