"""`corral run`'s limits on a real cgroup v2 kernel (inside `corral machine`): the OOM killer
ends a container over --memory (exit 137, OOMKilled in inspect), --cpus throttles, --pids-limit
refuses forks, io limits hold O_DIRECT writes to the scratch disk, `update` changes a running
container's cgroup files, rm removes the cgroup, and 200 run/rm cycles leak nothing.

The containers are started through the real CLI (a subprocess) or, for the cycles, through
runtime.container.lifecycle (the CLI's own code path without a Python start per cycle, which
costs seconds under TCG); each test has its own state directory and cgroup parent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kernel_harness import START_TIMEOUT, Figures, MiB, wait_until

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device, read_io_stat
from runtime.container import lifecycle
from runtime.container.cgroup import ContainerCgroups
from runtime.container.spec import build_spec
from runtime.container.state import StateStore
from runtime.rootfs.busybox import build_busybox

CLI = """
from corral.cli import main
main(prog_name="corral")
"""
ROOT = Path(__file__).resolve().parents[2]
# 200 cycles take 30 s on the host (tests/unit/test_container_lifecycle.py runs them there,
# without limits) but 15-30 s *each* under TCG on a busy host: in the machine the loop stops
# after CORRAL_RUN_RM_BUDGET seconds once MIN_CYCLES have run, and says how many it did.
CYCLES = int(os.environ.get("CORRAL_RUN_RM_CYCLES", "200"))
BUDGET = float(os.environ.get("CORRAL_RUN_RM_BUDGET", "150"))
MIN_CYCLES = 5


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="corral-kernel-run-", dir="/tmp"))
    build_busybox(str(base / "rootfs"))
    yield base / "rootfs"
    shutil.rmtree(base)


@dataclass
class Corral:
    state_dir: Path
    parent: str
    fs: CgroupFS

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, CORRAL_STATE_DIR=str(self.state_dir), PYTHONPATH=str(ROOT))
        env["CORRAL_CGROUP_PARENT"] = self.parent
        argv = [sys.executable, "-c", CLI, *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str) -> str:
        out = self.run(*args)
        assert out.returncode == 0, f"corral {' '.join(args)}: {out.returncode} {out.stderr}"
        return out.stdout

    def state(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.ok("inspect", "--json", ref))[0]["state"]
        return found

    def cgroup(self, ref: str) -> str:
        return str(json.loads(self.ok("inspect", "--json", ref))[0]["cgroup"]["path"])

    def read(self, ref: str, name: str) -> str:
        return (self.fs.path(self.cgroup(ref)) / name).read_text()


@pytest.fixture
def corral(fs: CgroupFS, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Corral]:
    parent = f"corral-kernel-{os.getpid()}-{request.node.name[:40]}"
    c = Corral(tmp_path / "state", parent, fs)
    try:
        yield c
    finally:
        if fs.exists(parent):
            cgroups = ContainerCgroups(fs, parent)
            for child in fs.children(parent):
                cgroups.remove(f"{parent}/{child}")
            fs.remove(parent)


def test_memory_limit_oom_kills_with_exit_137_and_inspect_says_so(
    corral: Corral, rootfs: Path
) -> None:
    out = corral.run(
        "run", "--name", "hog", "--memory", "32m", "--memory-swap", "32m", str(rootfs), "--",
        "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1",
    )  # fmt: skip
    assert out.returncode == 128 + signal.SIGKILL, out.stderr
    state = corral.state("hog")
    assert (state["exit_code"], state["oom_killed"]) == (137, True)
    assert corral.read("hog", "memory.max") == f"{32 * MiB}\n"
    assert "oom_kill 1" in corral.read("hog", "memory.events")


def test_cpus_half_throttles_a_busy_loop(corral: Corral, rootfs: Path, figures: Figures) -> None:
    corral.ok("run", "-d", "--name", "busy", "--cpus", "0.5", str(rootfs), "--",
              "sh", "-c", "while :; do :; done")  # fmt: skip
    assert corral.read("busy", "cpu.max") == "50000 100000\n"
    first, start = cpu_stat(corral.read("busy", "cpu.stat")), time.monotonic()
    time.sleep(3)
    last, wall = cpu_stat(corral.read("busy", "cpu.stat")), time.monotonic() - start
    corral.ok("kill", "busy")
    assert last["nr_throttled"] > first["nr_throttled"]
    used = (last["usage_usec"] - first["usage_usec"]) / 1e6
    figures.within("CPU share under --cpus 0.5", used / wall * 100, 50, 0.3, "%")


def cpu_stat(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def test_pids_limit_refuses_forks(corral: Corral, rootfs: Path) -> None:
    script = "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done 2>&1; echo started; kill $(jobs -p)"
    out = corral.run("run", "--name", "forks", "--pids-limit", "4", str(rootfs), "--",
                     "sh", "-c", script)  # fmt: skip
    assert "can't fork" in out.stdout + out.stderr, out
    assert corral.read("forks", "pids.max") == "4\n"
    assert int(corral.read("forks", "pids.events").split()[1]) > 0


def test_io_limit_holds_direct_writes_to_the_scratch_disk(
    corral: Corral, rootfs: Path, scratch_disk: tuple[str, Device], figures: Figures
) -> None:
    path, device = scratch_disk
    script = (
        "read a b < /proc/uptime; dd if=/dev/zero of=/dev/scratch bs=256k count=16 oflag=direct"
        " 2>/dev/null; read c d < /proc/uptime; echo $a $c"
    )
    out = corral.ok(
        "run", "--name", "io", "-v", f"{path}:/dev/scratch", "--device-write-bps", f"{path}:1mb",
        str(rootfs), "--", "sh", "-c", script,
    )  # fmt: skip
    begin, end = (float(x) for x in out.split())
    figures.within("4 MiB written at --device-write-bps 1mb, seconds", end - begin, 4, 0.35, " s")
    assert corral.read("io", "io.max").startswith(
        f"{device.major}:{device.minor} rbps=max wbps={MiB} "
    )
    stat = read_io_stat(corral.fs, corral.cgroup("io"))
    assert stat is not None and stat[device].wbytes >= 4 * MiB


def test_update_changes_a_running_containers_kernel_files(corral: Corral, rootfs: Path) -> None:
    corral.ok("run", "-d", "--name", "live", str(rootfs), "--", "sleep", "1000")
    corral.ok(
        "update", "--memory", "64m", "--memory-high", "48m", "--cpus", "1.5", "--cpu-weight",
        "50", "--pids-limit", "20", "live",
    )  # fmt: skip
    assert corral.read("live", "memory.max") == f"{64 * MiB}\n"
    assert corral.read("live", "memory.high") == f"{48 * MiB}\n"
    assert corral.read("live", "cpu.max") == "150000 100000\n"
    assert corral.read("live", "cpu.weight") == "50\n"
    assert corral.read("live", "pids.max") == "20\n"
    assert corral.state("live")["status"] == "running"
    bad = corral.run("update", "--memory", "1k", "live")
    assert bad.returncode == 125 and "--memory" in bad.stderr
    assert corral.read("live", "memory.max") == f"{64 * MiB}\n"
    corral.ok("kill", "live")
    (shown,) = json.loads(corral.ok("inspect", "--json", "live"))
    recorded = shown["config"]["limits"]  # the limits in force, kept in config.json
    assert (recorded["memory"], recorded["cpu_weight"], recorded["pids_limit"]) == (
        64 * MiB,
        50,
        20,
    )


def test_rm_removes_the_cgroup(corral: Corral, rootfs: Path) -> None:
    corral.ok("run", "-d", "--name", "temp", "--memory", "64m", str(rootfs), "--", "sleep", "1000")
    path = corral.fs.path(corral.cgroup("temp"))
    assert path.is_dir()
    corral.ok("rm", "-f", "temp")
    assert not path.exists()
    assert corral.fs.children(corral.parent) == []


def snapshot(parent: str, fs: CgroupFS) -> tuple[list[str], set[str], int, list[str]]:
    mounts = {
        line.split(" ", 4)[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
    }
    children = [p for p in os.listdir("/proc") if p.isdigit() and _is_descendant(int(p))]
    cgroups = fs.children(parent) if fs.exists(parent) else []
    return cgroups, mounts, len(os.listdir("/proc/self/fd")), children


def _is_descendant(pid: int) -> bool:
    """A process whose parent is this one (shims are double-forked away: they show in the
    cgroup or state instead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()


def test_run_rm_cycles_leak_nothing(
    corral: Corral, rootfs: Path, fs: CgroupFS, figures: Figures
) -> None:
    store, cgroups = StateStore(str(corral.state_dir)), ContainerCgroups(fs, corral.parent)
    spec = build_spec(rootfs=str(rootfs), command=["true"], rm=True, memory="64m")
    started, done = time.monotonic(), 0
    while done < CYCLES:
        run = lifecycle.run(spec, store, cgroups, attach=True)
        assert lifecycle.wait_exit(store, run) == 0, f"cycle {done}"
        if done == 0:
            before = snapshot(corral.parent, fs)
        done += 1
        if done >= MIN_CYCLES and time.monotonic() - started > BUDGET:
            break
    took = time.monotonic() - started
    figures.note(f"{done} of {CYCLES} run --rm cycles of `true` (--memory 64m) in {took:.0f} s")
    wait_until(lambda: snapshot(corral.parent, fs) == before, START_TIMEOUT, "nothing to leak")
    assert store.list() == []
    assert fs.children(corral.parent) == []
    shims = [
        p
        for p in os.listdir("/proc")
        if p.isdigit() and _cmdline_has(int(p), str(corral.state_dir))
    ]
    assert shims == []


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
