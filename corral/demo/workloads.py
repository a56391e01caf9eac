"""The demo's containers: what each runs (busybox sh), its limits, and the `corral run`
command line that starts it. Pure: nothing here starts a process.

Each workload shows one part of the enforcer (corral/demo/policy.toml says which rule acts
on it and why). The scripts are busybox ash, so they run in the `corral rootfs busybox` root
filesystem; the ones that need real page cache or a block device write under /data, a
volume on the machine's scratch disk (ext4) or, on a host, under /var/tmp.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "demo-"
PARENT = "corral"  # the policy's managed root: every demo container is below it
# demo-leak's pool: oom_guard watches the pool's memory pressure and kills inside it (the
# watched cgroup itself is never a candidate).
POOL = "corral/demo-pool"
LABEL = "corral.demo"  # label key; the value is the workload's role

# A busy loop: one core of demand under a 0.2-core quota.
CPU_HOG = "while :; do :; done"

# Writes 4 MiB files, fsync'd (clean page cache, reclaimable), 40 of them in rotation: the
# cache grows towards 160 MiB unless memory.high squeezes the cold files out.
CACHE_GROWER = """\
i=0
while :; do
  dd if=/dev/zero of=/data/f$((i % 40)) bs=1M count=4 conv=fsync 2>/dev/null
  i=$((i + 1))
  sleep 0.5
done"""

# An anonymous-memory leak of up to 40 MiB/s (less under emulation): busybox tail keeps the
# whole of a "line" that never ends. A reader re-reads a 16 MiB file beside it, so reclaim
# has page cache to scan (oom_guard acts only while reclaim runs) and refaults count as
# memory stall.
LEAK = """\
dd if=/dev/zero of=/data/cache bs=1M count=16 conv=fsync 2>/dev/null
(while :; do cat /data/cache >/dev/null || sleep 1; done) &
while :; do head -c 4194304 /dev/zero; sleep 0.1; done | tail -n 1"""

# Forks sleepers until fork fails (EAGAIN at pids.max). ash exits when a fork fails, so the
# storm runs in a child shell and the outer loop waits on a FIFO (`read -t`, a builtin: no
# fork) until the sleepers are gone. Starts after 8 s, once the guard has set pids.max.
FORK_STORM = """\
mkfifo /tmp/demo-fork-tick
exec 3<>/tmp/demo-fork-tick
read -t 8 x <&3
while :; do
  sh -c 'while :; do sleep 5 & done' 2>/dev/null
  read -t 6 x <&3
done"""

# O_DIRECT writes (no page cache: every byte goes to the device at once). A filesystem that
# refuses O_DIRECT (tmpfs: EINVAL) makes dd fail: wait rather than spin.
IO_WRITER = """\
while :; do
  dd if=/dev/zero of=/data/io.bin bs=1M count=32 oflag=direct 2>/dev/null || sleep 1
done"""

# A light service, idle: nothing should act on it.
STEADY = "httpd -f -p 8080 -h /tmp"


@dataclass(frozen=True)
class Workload:
    """One demo container: its name, role, script and `corral run` limit options."""

    name: str
    role: str
    script: str
    limits: tuple[str, ...]
    data: bool = False  # gets /data (a directory of its own on the data filesystem)
    init: bool = False  # --init: a PID 1 that reaps (orphaned sleepers of the fork storm)
    parent: str = PARENT
    shows: str = ""


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "demo-steady", "steady", STEADY, ("--memory", "64m", "--cpus", "0.5"),
        shows="left alone: no action",
    ),
    Workload(
        "demo-cpu-hog", "cpu", CPU_HOG, ("--cpus", "0.2", "--memory", "64m"),
        shows="cpu_quota raises cpu.max from 0.2 core",
    ),
    Workload(
        "demo-cache-grower", "cache", CACHE_GROWER, ("--memory", "256m"), data=True,
        shows="memory_pressure tunes memory.high; page cache squeezed, never OOM-killed",
    ),
    Workload(
        "demo-leak", "leak", LEAK, ("--memory", "256m", "--memory-high", "48m"),
        data=True, parent=POOL,
        shows="oom_guard freezes and kills it (cgroup.kill) once its pool stalls",
    ),
    Workload(
        "demo-fork-storm", "forks", FORK_STORM, ("--pids-limit", "512", "--memory", "64m"),
        init=True,
        shows="pids_guard holds pids.max at current + 16; forks refused",
    ),
    Workload(
        "demo-io-writer", "io", IO_WRITER, ("--memory", "64m"), data=True,
        shows="io.max wbps=4M on the scratch disk (a static limits rule)",
    ),
)  # fmt: skip

NAMES = tuple(w.name for w in WORKLOADS)


def run_argv(corral: str, workload: Workload, rootfs: str, data_dir: str | None) -> list[str]:
    """`corral run -d` for ``workload`` in ``rootfs``; ``data_dir`` is its /data volume
    (required when the workload has data=True). Loopback only (--network none)."""
    if workload.data and data_dir is None:
        raise ValueError(f"{workload.name}: needs a data directory for /data")
    argv = [corral, "run", "-d", "--name", workload.name, "--network", "none"]
    argv += ["--cgroup-parent", workload.parent, "--label", f"{LABEL}={workload.role}"]
    argv += list(workload.limits)
    if workload.init:
        argv.append("--init")
    if workload.data:
        argv += ["-v", f"{data_dir}:/data"]
    return [*argv, rootfs, "--", "sh", "-c", workload.script]


def io_rule(device: str, wbps: str = "4M") -> str:
    """The policy rule (TOML) that caps demo-io-writer's writes on ``device`` (MAJ:MIN)."""
    if not device.replace(":", "", 1).isdigit() or device.count(":") != 1:
        raise ValueError(f"device {device!r}: expected MAJ:MIN like 254:0")
    return (
        "\n# Generated by corral demo: the scratch disk is known only at run time.\n"
        "[[rule]]\n"
        'name = "io-writer"\n'
        'select = { name = "demo-io-writer" }\n\n'
        "[rule.limits]\n"
        f'io_max = ["{device} wbps={wbps}"]\n'
    )
