"""A real Prometheus (Debian's package) scrapes `corral serve --no-enforce` on loopback while
a busy loop runs in a cgroup of the host's real cgroup2, and answers PromQL about it.

The host's cgroup2 (/sys/fs/cgroup/unified on the hybrid build machines) has no controllers,
but every child cgroup still has cpu.stat and cgroup.procs, which is what this test needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from runtime.cgroupfs import CgroupFS

CORRAL = str(Path(sys.executable).with_name("corral"))
DEADLINE_SECONDS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: bytes = resp.read()
        return data


def wait_for(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        with contextlib.suppress(OSError):
            fetch(url)
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def query(prometheus: str, promql: str) -> list[dict[str, object]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = json.loads(fetch(url))
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def value_of(prometheus: str, promql: str, deadline: float) -> float:
    """The single value of ``promql``, once Prometheus has the samples to answer it."""
    while time.monotonic() < deadline:
        result = query(prometheus, promql)
        if result:
            assert len(result) == 1, result
            sample = result[0]["value"]
            assert isinstance(sample, list)
            return float(sample[1])
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never answered {promql}")


def window_full(prometheus: str, selector: str, deadline: float) -> None:
    """Wait until the 5s window holds 5 scrapes: with fewer, rate() extrapolates from a
    series that starts inside the window and reads low (0.3 cores for a busy loop)."""
    while value_of(prometheus, f"count_over_time({selector}[5s])", deadline) < 5:
        time.sleep(0.5)


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process stopped with SIGTERM (then SIGKILL) at the end, whatever happened."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def busy_cgroups(fs: CgroupFS, base: str) -> Iterator[None]:
    """``base``/busy with a CPU-bound loop in it, ``base``/idle empty; removed afterwards."""
    fs.create(f"{base}/idle")
    fs.create(f"{base}/busy")
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        fs.move(loop.pid, f"{base}/busy")
        yield
    finally:
        loop.kill()
        loop.wait(timeout=10)
        for _ in range(50):  # the kernel drops the exited task from cgroup.procs shortly
            if not fs.procs(f"{base}/busy"):
                break
            time.sleep(0.1)
        fs.remove(base, recursive=True)


def prometheus_config(tmp: Path, target: str) -> Path:
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: corral\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    return config


def test_prometheus_scrapes_corral_and_answers_promql(tmp_path: Path) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    fs = CgroupFS.discover()
    base = f"corral-e2e-{os.getpid()}"
    corral_port, prom_port = free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prom_port}"
    corral_argv = [CORRAL, "serve", "--no-enforce", "--listen", f"127.0.0.1:{corral_port}"]
    prom_argv = [
        "prometheus",
        f"--config.file={prometheus_config(tmp_path, f'127.0.0.1:{corral_port}')}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
    ]
    with (
        busy_cgroups(fs, base),
        running(corral_argv, tmp_path / "corral.log") as corral,
        running(prom_argv, tmp_path / "prometheus.log") as prom,
    ):
        wait_for(f"http://127.0.0.1:{corral_port}/healthz", corral, deadline)
        wait_for(f"{prometheus}/-/ready", prom, deadline)
        window_full(prometheus, f'corral_cpu_usage_seconds_total{{cgroup="{base}/busy"}}', deadline)
        rate = 'rate(corral_cpu_usage_seconds_total{{cgroup="{}"}}[5s])'
        busy = value_of(prometheus, rate.format(f"{base}/busy"), deadline)
        idle = value_of(prometheus, rate.format(f"{base}/idle"), deadline)
        up = value_of(prometheus, 'up{job="corral"}', deadline)
        info = query(prometheus, f'corral_cgroup_info{{cgroup="{base}/busy"}}')
        corral.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        status = corral.wait(timeout=10)
        took = time.monotonic() - stopped_at
    log = (tmp_path / "corral.log").read_text()
    assert 0.5 < busy < 1.3, f"busy loop at {busy:.2f} cores (a shared host: loose bounds)"
    assert idle < 0.05, idle
    assert up == 1
    assert len(info) == 1 and info[0]["metric"]["kind"] == "cgroup"  # type: ignore[index]
    assert status == 0 and took < 5, (status, took, log)
    assert "<" not in log.splitlines()[0]  # not journald here: "info: ..." lines
    assert log.splitlines()[-1] == "info: corral.serve: stopped", log
