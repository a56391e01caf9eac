"""Capture cgroup v2 fixture trees from a real kernel (run inside `corral machine`).

    make fixtures
    # = corral machine run --memory 2G --cpus 2 --disk 512M --out tests/fixtures -- \
    #       .venv/bin/python tools/capture_fixtures.py tests/fixtures/cgroupfs

Builds ``capture/`` with real workloads under limits of every kind (a CPU hog throttled by
cpu.max, a memory.high squeeze, an OOM kill under memory.max, O_DIRECT io under io.max, a
fork loop against pids.max, a frozen cgroup with an odd name), then copies every readable
interface file of the root and of each cgroup to OUT/<kernel release>/<cgroup>/<file> and
writes OUT/<kernel release>/CAPTURE.json saying what ran where and which limits were set.
A re-run replaces the capture for that kernel. All cgroup work goes through runtime.cgroupfs;
only the raw copying opens interface files by hand.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.cgroupfs import CgroupFS, core, cpu, cpuset, io, memory, pids
from runtime.cgroupfs.formats import parse_id_list, parse_int_or_max
from runtime.cgroupfs.limit_syntax import parse_cpus, parse_device, parse_io_limit, parse_size

TOP = "capture"
ODD = f"{TOP}/odd name #1 (a+b)"  # the kernel allows anything but '/' and newline
CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")
MAX_FILE_BYTES = 64 << 10  # no interface file is near this; a guard for the fixture size

# Workload programs, run as `python -c PROGRAM [ARG]` (recorded verbatim in CAPTURE.json).
BUSY_LOOP = "while True: pass"
BRIEF_WORK_THEN_SLEEP = """\
import time
end = time.monotonic() + 0.5
while time.monotonic() < end: pass
time.sleep(900)
"""
SQUEEZE = """\
import sys, time
anon = bytearray(16 << 20)
for i in range(0, len(anon), 4096): anon[i] = 1
end, done = time.monotonic() + 6, 0
with open(sys.argv[1], 'rb', buffering=0) as disk:
    while time.monotonic() < end and done < 3 * (512 << 20):
        chunk = disk.read(1 << 20)
        if not chunk: disk.seek(0)
        done += len(chunk)
print(f'touched 16 MiB anon, read {done >> 20} MiB of {sys.argv[1]} through the page cache')
"""
OOM_ALLOC = """\
chunks = []
for _ in range(64):
    chunk = bytearray(4 << 20)
    for i in range(0, len(chunk), 4096): chunk[i] = 1
    chunks.append(chunk)
print('allocated 256 MiB and was not killed')
"""
FORK_LOOP = """\
import os, time
kids, refused = [], 0
for _ in range(32):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(900)
        os._exit(0)
    kids.append(pid)
print(f'forked {len(kids)}, refused {refused} (EAGAIN)', flush=True)
time.sleep(900)
"""
DIRECT_IO = (
    'dd if=/dev/zero of="$1" bs=256k count=32 oflag=direct'
    ' && dd if="$1" of=/dev/null bs=256k count=32 iflag=direct'
)


@dataclass(frozen=True)
class Workload:
    cgroup: str
    argv: tuple[str, ...]
    purpose: str
    runs_until_cleanup: bool = False


def workloads(disk: str) -> list[Workload]:
    py = sys.executable
    return [
        Workload(f"{TOP}/web", (py, "-c", BUSY_LOOP), "CPU hog throttled by cpu.max 0.2", True),
        Workload(
            f"{TOP}/batch/worker-1",
            (py, "-c", SQUEEZE, disk),
            "16 MiB anon + buffered disk reads: working set above memory.high 32M",
        ),
        Workload(
            f"{TOP}/batch/worker-2",
            ("sh", "-c", DIRECT_IO, "sh", disk),
            "8 MiB O_DIRECT write then read of the scratch disk under io.max",
        ),
        Workload(f"{TOP}/oom", (py, "-c", OOM_ALLOC), "touches 256 MiB under memory.max 32M"),
        Workload(f"{TOP}/forky", (py, "-c", FORK_LOOP), "32 forks against pids.max 8", True),
        Workload(ODD, (py, "-c", BRIEF_WORK_THEN_SLEEP), "0.5 s of CPU then sleeps; frozen", True),
    ]


def limits(disk: str) -> dict[str, dict[str, str]]:
    """Limits by cgroup, in corral's human syntax (limit_syntax), set before anything runs."""
    return {
        TOP: {"memory.max": "768M", "pids.max": "256"},
        f"{TOP}/web": {"cpu.max": "0.2", "cpu.max.burst": "10000", "cpu.weight": "200"},
        f"{TOP}/batch": {
            "cpu.weight": "50",
            "memory.min": "16M",
            "memory.low": "64M",
            "memory.max": "512M",
            "io.weight": "50",
            "pids.max": "64",
        },
        f"{TOP}/batch/worker-1": {
            "memory.min": "8M",
            "memory.low": "16M",
            "memory.high": "32M",
            "memory.max": "256M",
            "memory.swap.max": "0",
        },
        f"{TOP}/batch/worker-2": {
            "io.max": f"{disk} rbps=8M wbps=4M wiops=400",
            "io.weight": "200",
        },
        f"{TOP}/oom": {"memory.max": "32M", "memory.swap.max": "0", "memory.oom.group": "1"},
        f"{TOP}/forky": {"pids.max": "8"},
        ODD: {
            "cpu.max": "25000/50000",
            "cpu.weight": "1",
            "cpuset.cpus": "1",
            "cpuset.mems": "0",
        },
    }


def apply_limit(fs: CgroupFS, cgroup: str, name: str, spec: str) -> None:
    if name == "cpu.max":
        cpu.write_cpu_max(fs, cgroup, parse_cpus(spec))
    elif name == "cpu.max.burst":
        cpu.write_cpu_max_burst(fs, cgroup, int(spec))
    elif name == "cpu.weight":
        cpu.write_cpu_weight(fs, cgroup, int(spec))
    elif name in memory.LIMIT_FILES:
        memory.write_memory_limit(fs, cgroup, name, parse_size(spec, name))
    elif name == "memory.oom.group":
        memory.write_memory_oom_group(fs, cgroup, spec == "1")
    elif name == "pids.max":
        pids.write_pids_max(fs, cgroup, parse_int_or_max(spec, name))
    elif name == "io.max":
        device, limit = parse_io_limit(spec)
        io.write_io_max(fs, cgroup, {device: limit})
    elif name == "io.weight":
        io.write_io_weight(fs, cgroup, int(spec))
    elif name in ("cpuset.cpus", "cpuset.mems"):
        cpuset.write_cpuset(fs, cgroup, name, parse_id_list(spec, name))
    else:
        raise SystemExit(f"capture_fixtures: no writer for {name}")


def build_tree(fs: CgroupFS, disk: str) -> None:
    fs.create(TOP)
    fs.enable_controllers(TOP, CONTROLLERS)
    for cgroup in (f"{TOP}/web", f"{TOP}/batch", f"{TOP}/oom", f"{TOP}/forky", ODD):
        fs.create(cgroup)
    fs.enable_controllers(f"{TOP}/batch", CONTROLLERS)
    fs.create(f"{TOP}/batch/worker-1")
    fs.create(f"{TOP}/batch/worker-2")
    for cgroup, files in limits(disk).items():
        for name, spec in files.items():
            apply_limit(fs, cgroup, name, spec)


def spawn(fs: CgroupFS, work: Workload) -> subprocess.Popen[str]:
    """Start ``work`` already inside its cgroup: the child joins it before exec."""
    return subprocess.Popen(
        work.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: fs.move(os.getpid(), work.cgroup),
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"capture_fixtures: timed out waiting for {what}")
        time.sleep(0.2)


def run_workloads(fs: CgroupFS, disk: str, record: dict[str, Any]) -> list[subprocess.Popen[str]]:
    started = [(w, spawn(fs, w)) for w in workloads(disk)]
    for work, proc in started:
        entry: dict[str, Any] = {"argv": list(work.argv), "purpose": work.purpose}
        assert proc.stdout is not None
        if work.runs_until_cleanup:
            entry["exit_status"] = "running at capture time, then killed by cgroup.kill"
            if work.cgroup.endswith("/forky"):
                entry["output"] = proc.stdout.readline().strip()
        else:
            out, _ = proc.communicate(timeout=300)
            entry["exit_status"] = proc.returncode
            entry["output"] = out.strip()
        record[work.cgroup]["workload"] = entry
        print(f"capture_fixtures: {work.cgroup}: {entry['exit_status']} {entry.get('output', '')}")

    def throttled() -> bool:
        stat = cpu.read_cpu_stat(fs, f"{TOP}/web")
        return stat is not None and (stat.nr_throttled or 0) >= 20

    wait_for("capture/web to be throttled 20 times", throttled)
    fs.freeze(ODD)
    wait_for(f"{ODD} to freeze", lambda: bool((e := core.read_cgroup_events(fs, ODD)) and e.frozen))
    return [p for _, p in started]


def copy_cgroup(fs: CgroupFS, cgroup: str, dest: Path, skipped: dict[str, Any]) -> int:
    """Copy the readable interface files of ``cgroup`` byte for byte; returns how many."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = 0
    with os.scandir(fs.path(cgroup)) as entries:
        files = sorted(
            (e for e in entries if e.is_file(follow_symlinks=False)), key=lambda e: e.name
        )
    for entry in files:
        key = f"{cgroup}/{entry.name}" if cgroup else entry.name
        if not entry.stat().st_mode & stat.S_IRUSR:
            skipped["write_only"].append(key)
            continue
        try:
            with open(entry.path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            skipped["read_failed"][key] = f"{errno.errorcode.get(e.errno or 0)}: {e.strerror}"
            continue
        if len(data) > MAX_FILE_BYTES:
            skipped["too_large"].append(key)
            continue
        (dest / entry.name).write_bytes(data)
        copied += 1
    return copied


def capture(fs: CgroupFS, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    skipped: dict[str, Any] = {"write_only": [], "read_failed": {}, "too_large": []}
    cgroups = ["", *fs.walk(TOP)]
    copied = sum(copy_cgroup(fs, cg, out / cg if cg else out, skipped) for cg in cgroups)
    return {"cgroups": cgroups, "copied": copied, "skipped": skipped}


def cleanup(fs: CgroupFS, procs: list[subprocess.Popen[str]]) -> None:
    """cgroup.kill the whole tree (frozen tasks die too), reap, then rmdir bottom-up."""
    if fs.exists(TOP):
        fs.kill(TOP)
    for proc in procs:
        proc.communicate(timeout=60)

    def empty() -> bool:
        events = core.read_cgroup_events(fs, TOP) if fs.exists(TOP) else None
        return events is None or not events.populated

    wait_for(f"{TOP} to empty", empty)
    fs.remove(TOP, recursive=True)


def kernel_facts(disk: str) -> dict[str, Any]:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True)
    device = parse_device(disk)
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "kernel": {"release": os.uname().release, "uname": uname.stdout.strip()},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_kib": mem_kib},
        "disk": {"path": disk, "device": str(device)},
        "captured_by": "tools/capture_fixtures.py via `make fixtures`",
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: capture_fixtures.py OUT_DIR   (run it through `make fixtures`)")
        return 2
    disk = os.environ.get("CORRAL_MACHINE_DISK")
    if not os.environ.get("CORRAL_IN_MACHINE") or not disk:
        print("capture_fixtures: run inside `corral machine run --disk ...` (make fixtures)")
        return 2
    out = Path(argv[1]).resolve()
    release = os.uname().release
    staging = out / f".{release}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    fs = CgroupFS()
    cleanup(fs, [])  # a previous run's leftovers, if any
    record: dict[str, Any] = {
        cg: {"limits": spec, "workload": None} for cg, spec in limits(disk).items()
    }
    procs: list[subprocess.Popen[str]] = []
    try:
        build_tree(fs, disk)
        procs = run_workloads(fs, disk, record)
        files = capture(fs, staging, record)
    finally:
        cleanup(fs, procs)
    doc = {**kernel_facts(disk), "controllers_enabled": list(CONTROLLERS), "cgroups": record}
    doc["files"] = files
    (staging / "CAPTURE.json").write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    shutil.rmtree(out / release, ignore_errors=True)
    staging.rename(out / release)
    size = sum(p.stat().st_size for p in (out / release).rglob("*") if p.is_file())
    print(f"capture_fixtures: {files['copied']} files, {size} bytes in {out / release}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
