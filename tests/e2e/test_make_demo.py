"""`make demo` with CORRAL_DEMO_HEADLESS=1 on this host, as a new user would run it: the
hybrid cgroup layout sends the demo into a corral machine (booted under TCG), the summary
is printed on the host from the forwarded port, and nothing is left behind.

The 300 s timeout is the issue's bound on the whole run (boot included), not a timed
assertion of anything finer.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from corral.demo.workloads import NAMES

ROOT = Path(__file__).resolve().parents[2]
CORRAL = str(Path(sys.executable).with_name("corral"))
BOUND_SECONDS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_forwarding(port: int) -> list[str]:
    """qemu processes forwarding ``port`` (ours; other machines may run beside)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "qemu-system" in cmdline and f"hostfwd=tcp:127.0.0.1:{port}-" in cmdline:
            found.append(pid)
    return found


def test_make_demo_headless_in_a_machine() -> None:
    port = free_port()
    work_before = set(os.listdir("/var/tmp"))
    env = {**os.environ, "CORRAL_DEMO_HEADLESS": "1", "DEMO_OPTS": f"--port {port}"}
    done = subprocess.run(
        ["make", "-s", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
    )
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err[-3000:] + out[-3000:]
    assert "running the demo in a corral machine with a real cgroup v2 kernel" in err, err
    lines = out.splitlines()
    actions = [ln for ln in lines if re.match(r"^  \d\d:\d\d:\d\d demo-", ln)]

    def acted(name: str, controller: str, file: str) -> bool:
        pattern = rf"^  \S+ {name} +{controller} +{re.escape(file)} .*\[applied\]"
        return any(re.match(pattern, ln) for ln in actions)

    assert acted("demo-cpu-hog", "cpu_quota", "cpu.max"), out
    assert acted("demo-cache-grower", "memory_pressure", "memory.high"), out
    assert acted("demo-leak", "oom_guard", "cgroup.kill"), out
    assert acted("demo-fork-storm", "pids_guard", "pids.max"), out
    assert not [ln for ln in actions if " demo-steady " in ln], out
    assert "io.max" in out and "wbps=4194304" in out  # the machine's scratch disk's rule
    assert re.search(
        rf"scraped http://127\.0\.0\.1:{port}/metrics: \d+ series, [1-9]\d* of them", out
    ), out
    assert {ln.split()[0] for ln in lines if re.match(r"^  demo-\S+ +(running|stopped)", ln)} == (
        set(NAMES)
    ), out

    assert qemu_forwarding(port) == []
    listed = subprocess.run(
        [CORRAL, "ps", "-a", "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert not [c["name"] for c in json.loads(listed) if c["name"] in NAMES]
    left = {d for d in set(os.listdir("/var/tmp")) - work_before if d.startswith("corral-demo-")}
    assert left == set()
