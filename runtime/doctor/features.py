"""What each kernel facility gives corral, and how a host gets it: the text of the checks."""

from __future__ import annotations

# The controllers corral uses, in the order the report lists them.
NEEDED_CONTROLLERS = ("cpu", "memory", "io", "pids", "cpuset")

# What a cgroup v2 controller missing from cgroup.controllers takes away.
CONTROLLER_FEATURES: dict[str, list[str]] = {
    "memory": [
        "memory limits (--memory, --memory-high, memory_pressure and oom_guard policies)",
        "memory figures (memory.current, memory.stat, memory.events, working set)",
    ],
    "io": ["io limits (--device-*-bps/iops, io_pressure policy)", "io.stat figures"],
    "pids": ["--pids-limit", "pids_guard", "pids.current/pids.events"],
    "cpu": ["cpu.max/cpu.weight limits", "throttling figures", "cpu_quota policy"],
    "cpuset": ["--cpuset-cpus"],
}

# The Kconfig option behind each controller, for kernels that lack it outright.
CONTROLLER_CONFIG = {
    "memory": "CONFIG_MEMCG",
    "io": "CONFIG_BLK_CGROUP",
    "pids": "CONFIG_CGROUP_PIDS",
    "cpu": "CONFIG_CGROUP_SCHED",
    "cpuset": "CONFIG_CPUSETS",
}

NAMESPACE_FEATURES: dict[str, list[str]] = {
    "user": [
        "user namespaces in containers (container root is not host root)",
        "rootless containers",
    ],
    "pid": ["pid isolation (the container's command as pid 1)"],
    "net": ["network isolation (a container's own network stack)"],
    "mnt": ["containers (their root filesystem, /proc and /dev mounts)"],
    "ipc": ["ipc isolation (System V ipc, POSIX message queues)"],
    "uts": ["container hostnames"],
    "cgroup": ["cgroup namespaces (a container sees its own cgroup as /)"],
    "time": ["time namespaces (per-container monotonic and boot clock offsets)"],
}

NAMESPACE_CONFIG = {
    "user": "CONFIG_USER_NS",
    "pid": "CONFIG_PID_NS",
    "net": "CONFIG_NET_NS",
    "mnt": "a mount namespace (always built in)",
    "ipc": "CONFIG_IPC_NS",
    "uts": "CONFIG_UTS_NS",
    "cgroup": "CONFIG_CGROUPS",
    "time": "CONFIG_TIME_NS (Linux 5.6+)",
}

PSI_FEATURES = [
    "pressure figures ({cpu,memory,io}.pressure)",
    "memory_pressure and io_pressure policies",
    "pressure triggers",
]

CPU_STAT_FEATURES = ["cpu usage figures (cpu.stat usage_usec, user_usec, system_usec)"]

PRIVILEGE_FEATURES = [
    "corral run (mounts and pivot_root need CAP_SYS_ADMIN)",
    "limits and the enforcer (writing cgroup files)",
]

MACHINE_FEATURES = [
    "corral machine (a real cgroup v2 kernel for this host)",
    "the kernel test suite (tests/kernel)",
]

UNIFIED_BOOT = "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"


def machine_fix(corral: str) -> str:
    """The exact command that runs corral with full cgroup v2 on this host."""
    return f"or run corral in the machine: `{corral} machine run -- {corral} doctor`"


def namespace_fix(name: str, error: str) -> str:
    """unshare(2)'s errors: EPERM (no CAP_SYS_ADMIN, or seccomp/LSM said no), EINVAL (the
    kernel lacks the namespace), ENOSPC (user.max_NAME_namespaces reached, 0 disables)."""
    if error == "ENOSPC":
        return f"raise the limit: sysctl -w user.max_{name}_namespaces=15000"
    if error == "EINVAL":
        return f"use a kernel built with {NAMESPACE_CONFIG[name]}"
    if error == "EPERM":
        return (
            "run as root; if already root, the container or sandbox corral runs in denies "
            "unshare(2) (seccomp or LSM policy): allow it there"
        )
    return "see unshare(2) for this error"
