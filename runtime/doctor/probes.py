"""What this host offers corral, one small probe per fact. Nothing here changes the host.

Where cgroups are mounted is runtime.cgroupfs.mounts' business. Pure ``parse_*`` functions
take text captured from the kernel (so tests can feed fixtures); the ``read_*`` functions
beside them read the real files, with every path passed in as a value.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.pressure import RESOURCES, parse_pressure


@dataclass(frozen=True)
class Kernel:
    release: str
    machine: str
    cmdline: tuple[str, ...]  # the cgroup and psi parameters of /proc/cmdline

    @property
    def version(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass(frozen=True)
class Controllers:
    """cgroup.controllers (available) and cgroup.subtree_control (enabled) of one cgroup."""

    path: str
    exists: bool
    available: tuple[str, ...] = ()
    enabled: tuple[str, ...] = ()


@dataclass(frozen=True)
class CpuStat:
    path: str
    usage: bool  # cpu.stat has usage_usec: the core cgroup2 figure, no controller needed


@dataclass(frozen=True)
class Psi:
    """Pressure stall information, system-wide and at one cgroup. ``error`` says why not."""

    system: dict[str, bool]
    cgroup: dict[str, bool]
    error: str | None = None

    @property
    def available(self) -> bool:
        return all(self.system.values()) and all(self.cgroup.values())


@dataclass(frozen=True)
class Privileges:
    euid: int
    cap_eff: int
    cgroup_writable: bool  # the cgroup2 root's cgroup.subtree_control opens for writing

    @property
    def cap_sys_admin(self) -> bool:
        return bool(self.cap_eff >> CAP_SYS_ADMIN & 1)


CAP_SYS_ADMIN = 21  # <linux/capability.h>


def read_kernel(cmdline: str = "/proc/cmdline") -> Kernel:
    """uname(2) and the cgroup/psi parameters of /proc/cmdline."""
    uts = os.uname()
    try:
        words = Path(cmdline).read_text().split()
    except OSError:
        words = []
    wanted = ("cgroup", "systemd.unified_cgroup_hierarchy", "systemd.legacy", "psi")
    return Kernel(uts.release, uts.machine, tuple(w for w in words if w.startswith(wanted)))


def read_controllers(fs: CgroupFS, cgroup: str) -> Controllers:
    """cgroup.controllers and cgroup.subtree_control of ``cgroup``; exists=False if absent."""
    path = str(fs.path(cgroup))
    if not fs.exists(cgroup):
        return Controllers(path, exists=False)
    available = tuple(sorted(fs.controllers(cgroup)))
    return Controllers(path, True, available, tuple(sorted(fs.subtree_control(cgroup))))


def read_cpu_stat(fs: CgroupFS, cgroup: str = "") -> CpuStat:
    """cpu.stat: usage_usec, user_usec and system_usec are kept by the cgroup core itself,
    so they exist even when the cpu controller is bound to v1 (only throttling needs it)."""
    text = fs.read(cgroup, "cpu.stat") or ""
    usage = any(line.split()[:1] == ["usage_usec"] for line in text.splitlines())
    return CpuStat(str(fs.path(cgroup) / "cpu.stat"), usage)


def read_psi(fs: CgroupFS | None, proc_pressure: str = "/proc/pressure") -> Psi:
    """/proc/pressure/{cpu,memory,io} and the root cgroup's {cpu,memory,io}.pressure.

    Without CONFIG_PSI the files do not exist (ENOENT); with psi=0 on the kernel command line
    (or CONFIG_PSI_DEFAULT_DISABLED without psi=1) they exist but reads fail EOPNOTSUPP.
    """
    system: dict[str, bool] = {}
    cgroup: dict[str, bool] = {}
    errors: list[str] = []
    for res in RESOURCES:
        system[res] = _readable_pressure(os.path.join(proc_pressure, res), errors)
        if fs is not None:
            cgroup[res] = _readable_pressure(str(fs.path("") / f"{res}.pressure"), errors)
    return Psi(system, cgroup, "; ".join(dict.fromkeys(errors)) or None)


def _readable_pressure(path: str, errors: list[str]) -> bool:
    try:
        parse_pressure(Path(path).read_text(), path)
        return True
    except OSError as e:
        why = {
            errno.EOPNOTSUPP: "EOPNOTSUPP: PSI is disabled (psi=0 on the kernel command line)",
            errno.ENOENT: "ENOENT: the kernel is built without CONFIG_PSI",
        }.get(e.errno or 0, e.strerror or str(e))
        errors.append(f"{path}: {why}")
    except ValueError as e:
        errors.append(str(e))
    return False


def parse_cap_eff(status: str) -> int:
    """The CapEff mask (hex) from /proc/PID/status text."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            return int(value.strip(), 16)
    raise ValueError("/proc/self/status: no CapEff line")


def read_privileges(cgroup2: str | None, status: str = "/proc/self/status") -> Privileges:
    """euid, CapEff from /proc/self/status, and write access to the cgroup2 root."""
    cap = parse_cap_eff(Path(status).read_text())
    writable = cgroup2 is not None and os.access(
        os.path.join(cgroup2, "cgroup.subtree_control"), os.W_OK
    )
    return Privileges(os.geteuid(), cap, writable)
