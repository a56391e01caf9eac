"""Agent CPU at 100 cgroups natively, on this host's own kernel (run by `make bench` before the
machine boots): `corral serve` polling once a second, against the C floor reading the same
files once a second, in the same run.

    python bench/native_cpu.py OUT.json --floor bench/out/floor_read [--seconds 30]

The machine's figures (BENCHMARKS.md) are emulated (qemu TCG, no KVM here), which inflates
CPU time several times over; this is the same measurement without emulation. The host's
cgroup2 is whatever it is: on these hybrid hosts it has no controllers, so only the files a
controller-less cgroup has are read (cpu.stat, the pressure files, cgroup.*); both the agent
and the floor read exactly those.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

import psutil
from bench_phases import STAT_FILES, floor_cpu_over

from runtime.cgroupfs import CgroupFS

BUSYBOX = "/bin/busybox"


def _tree(fs: CgroupFS, base: str, leaves: int) -> list[subprocess.Popen[bytes]]:
    fs.create(base)
    procs = []
    for i in range(leaves):
        leaf = f"{base}/c{i:03d}"
        fs.create(leaf)
        target = str(fs.path(leaf) / "cgroup.procs")
        procs.append(
            subprocess.Popen(
                [BUSYBOX, "sleep", "100000"],
                stdin=subprocess.DEVNULL,
                preexec_fn=lambda t=target: _join(t),  # type: ignore[misc]
            )
        )
    return procs


def _join(procs_file: str) -> None:
    with open(procs_file, "w") as f:
        f.write("0")


def _agent_cpu(fs: CgroupFS, base: str, port: int, seconds: float) -> dict[str, Any]:
    corral = os.path.join(os.path.dirname(sys.executable), "corral")
    argv = [corral, "serve", "--no-enforce", "--listen", f"127.0.0.1:{port}", "--interval", "1s"]
    argv += ["--cgroup-root", str(fs.root), "--subtree", base, "--log-level", "warning"]
    agent = subprocess.Popen(argv)
    try:
        proc = psutil.Process(agent.pid)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(3)
        before, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, t1 = proc.cpu_times(), time.monotonic()
        return {
            "user_fraction": (after.user - before.user) / (t1 - t0),
            "system_fraction": (after.system - before.system) / (t1 - t0),
            "rss": proc.memory_info().rss,
        }
    finally:
        agent.terminate()
        agent.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--floor", required=True)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--leaves", type=int, default=100)
    p.add_argument("--port", type=int, default=19847)
    args = p.parse_args()
    fs = CgroupFS.discover()
    base = f"corral-bench-native-{os.getpid()}"
    procs = _tree(fs, base, args.leaves)
    try:
        dirs = [str(fs.path(base)), *(str(fs.path(f"{base}/c{i:03d}")) for i in range(args.leaves))]
        files = [f for f in STAT_FILES if os.path.exists(os.path.join(dirs[-1], f))]
        result = {
            "kernel": os.uname().release,
            "root": str(fs.root),
            "cgroups": len(dirs),
            "files": files,
            "agent": _agent_cpu(fs, base, args.port, args.seconds),
            "floor": floor_cpu_over(args.floor, dirs, files, int(args.seconds)),
        }
    finally:
        fs.kill(base)
        for proc in procs:
            proc.wait()
        fs.remove(base, recursive=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
