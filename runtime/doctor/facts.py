"""All the probes, run once, as one value that diagnose() and the JSON output read."""

from __future__ import annotations

import os
from dataclasses import dataclass

from runtime.cgroupfs import CgroupFS, normalize
from runtime.cgroupfs.mounts import Layout, Mount, cgroup_layout, cgroup_mounts, read_mountinfo
from runtime.doctor.namespaces import NsResult, UsernsLimits, probe_namespaces, read_userns_limits
from runtime.doctor.probes import (
    Controllers,
    CpuStat,
    Kernel,
    Privileges,
    Psi,
    read_controllers,
    read_cpu_stat,
    read_kernel,
    read_privileges,
    read_psi,
)
from runtime.machine.requirements import Requirements, find_requirements

DEFAULT_PARENT = "corral"


@dataclass(frozen=True)
class Facts:
    kernel: Kernel
    mounts: list[Mount]  # the cgroup and cgroup2 mounts
    layout: Layout
    cgroup_root: str | None  # the cgroup2 hierarchy probed (discovered or --cgroup-root)
    root: Controllers | None  # None without a cgroup2 hierarchy
    parent_name: str
    parent: Controllers | None
    cpu_stat: CpuStat | None
    psi: Psi
    namespaces: dict[str, NsResult]
    userns: UsernsLimits
    privileges: Privileges
    machine: Requirements

    @property
    def root_available(self) -> frozenset[str]:
        return frozenset(self.root.available if self.root else ())


def gather(
    cgroup_root: str | None = None,
    parent: str = DEFAULT_PARENT,
    *,
    mountinfo: str = "/proc/self/mountinfo",
    verify: bool = True,
    check_kvm: bool = True,
) -> Facts:
    """Run every probe. ``cgroup_root`` overrides the cgroup2 mount found in mountinfo;
    a path that is not cgroup2 raises NotCgroup2 (with ``verify``), naming it.

    The namespace probes fork, so they run first, before anything could start a thread.
    """
    parent = normalize(parent)
    namespaces = probe_namespaces()
    mounts = read_mountinfo(mountinfo)
    layout = cgroup_layout(mounts)
    root_path = cgroup_root if cgroup_root is not None else layout.cgroup2_mount
    fs = CgroupFS(root_path, verify=verify) if root_path is not None else None
    return Facts(
        kernel=read_kernel(),
        mounts=cgroup_mounts(mounts),
        layout=layout,
        cgroup_root=os.fspath(fs.root) if fs else None,
        root=read_controllers(fs, "") if fs else None,
        parent_name=parent,
        parent=read_controllers(fs, parent) if fs and parent else None,
        cpu_stat=read_cpu_stat(fs) if fs else None,
        psi=read_psi(fs),
        namespaces=namespaces,
        userns=read_userns_limits(),
        privileges=read_privileges(root_path),
        machine=find_requirements(check_kvm=check_kvm),
    )
