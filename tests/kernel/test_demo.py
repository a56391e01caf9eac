"""`corral demo --headless --machine no` on a real cgroup v2 kernel, with a real Prometheus
(Debian's, from the host's read-only tree) scraping the demo's agent the whole time.

The summary must list what the demo policy is for: cpu_quota raising demo-cpu-hog's cpu.max,
memory_pressure writing demo-cache-grower's memory.high, oom_guard freezing and killing
demo-leak, pids_guard setting demo-fork-storm's pids.max with forks refused, and nothing on
demo-steady. Prometheus must hold corral_ series for every demo container. Afterwards no
demo container, no agent, no demo cgroup and no work directory may remain.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from corral.demo.workloads import NAMES, POOL
from runtime.cgroupfs import CgroupFS

CORRAL = str(Path(sys.executable).with_name("corral"))
DURATION = 90
DEMO_BOUND = 900  # a bound on the whole run under TCG, not a timed assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[str]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 2s\n"
        "scrape_configs:\n  - job_name: corral-demo\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    argv = [
        "/usr/bin/prometheus",
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
    ]
    with (tmp / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}"
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/-/ready", timeout=5).close()
                break
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(url: str, promql: str) -> list[dict[str, object]]:
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(full, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def demo_processes(port: int) -> list[str]:
    """Command lines of the demo's processes: the demo and the children it forks (the agent
    among them) carry its command line, --port included."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if " demo " in cmdline and f"--port {port}" in cmdline:
                found.append(f"{pid}: {cmdline}")
    return found


def action(summary: str, name: str, controller: str, file: str) -> list[str]:
    pattern = re.compile(rf"^  \d\d:\d\d:\d\d {re.escape(name)} +{controller} +{re.escape(file)} ")
    return [ln for ln in summary.splitlines() if pattern.match(ln) and "[applied]" in ln]


def test_headless_demo_acts_as_its_policy_says(fs: CgroupFS, tmp_path: Path) -> None:
    port = free_port()
    before = set(os.listdir(fs.path("corral"))) if fs.exists("corral") else set()
    work_before = set(os.listdir("/var/tmp"))
    argv = [CORRAL, "demo", "--headless", "--duration", str(DURATION), "--machine", "no"]
    argv += ["--port", str(port)]
    with prometheus(tmp_path, f"127.0.0.1:{port}") as prom:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=DEMO_BOUND)
        assert done.returncode == 0, done.stderr + done.stdout
        summary = done.stdout
        print(summary)
        seen = query(
            prom, 'count by (name) (last_over_time(corral_cgroup_info{name=~"demo-.*"}[30m]))'
        )
        usage = query(prom, "count(last_over_time(corral_memory_usage_bytes[30m]))")
    assert {r["metric"]["name"] for r in seen} == set(NAMES)  # type: ignore[index]
    assert usage and float(usage[0]["value"][1]) >= len(NAMES)  # type: ignore[index]

    raises = action(summary, "demo-cpu-hog", "cpu_quota", "cpu.max")
    assert raises and raises[0].split(" -> ")[0].endswith("20000 100000"), summary
    assert action(summary, "demo-cache-grower", "memory_pressure", "memory.high"), summary
    assert action(summary, "demo-leak", "oom_guard", "cgroup.freeze"), summary
    assert action(summary, "demo-leak", "oom_guard", "cgroup.kill"), summary
    assert action(summary, "demo-fork-storm", "pids_guard", "pids.max"), summary
    lines = summary.splitlines()
    assert not [ln for ln in lines if re.match(r"^  \d\d:\d\d:\d\d demo-steady ", ln)]
    assert any(ln.startswith("corral demo: no action on") and "demo-steady" in ln for ln in lines)
    containers = {ln.split()[0]: ln for ln in lines if re.match(r"^  demo-\S+ +(running|stop)", ln)}
    assert set(containers) == set(NAMES), summary
    assert "stopped" in containers["demo-leak"] and "oom_kill 0" in containers["demo-leak"]
    assert "running" in containers["demo-cache-grower"], "the grower was killed"
    refused = int(re.search(r"refused (\d+)", containers["demo-fork-storm"])[1])  # type: ignore[index]
    assert refused > 0, containers["demo-fork-storm"]
    assert re.search(
        r"scraped http://127\.0\.0\.1:\d+/metrics: \d+ series, [1-9]\d* of them", summary
    )
    assert "io.max" in summary and "wbps=4194304" in summary  # the scratch disk's rule

    listed = json.loads(subprocess.run([CORRAL, "ps", "-a", "--json"], capture_output=True,
                                       text=True, check=True).stdout)  # fmt: skip
    assert not [c["name"] for c in listed if c["name"] in NAMES]
    assert demo_processes(port) == []
    after = set(os.listdir(fs.path("corral"))) if fs.exists("corral") else set()
    assert not fs.exists(POOL)
    assert {d for d in after - before if fs.exists(f"corral/{d}")} == set()
    assert {
        d for d in set(os.listdir("/var/tmp")) - work_before if d.startswith("corral-demo-")
    } == set()
