"""`corral serve` as the benchmark sees it: a separate process, scraped over loopback HTTP,
its RSS and CPU time read with psutil."""

from __future__ import annotations

import http.client
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

_LAST = re.compile(rb"^corral_last_collect_timestamp_seconds (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Scrape:
    seconds: float
    size: int
    samples: int  # exposition lines that are not comments
    collected_at: float | None  # corral_last_collect_timestamp_seconds


class AgentProcess:
    """``corral serve --no-enforce`` on 127.0.0.1:``port`` over ``subtree``."""

    def __init__(
        self, subtree: str, port: int, interval: str, log: str, nofile: tuple[int, int]
    ) -> None:
        """``nofile``: the RLIMIT_NOFILE the agent starts with (the guest's own, not the
        raised one this process runs with)."""
        corral = os.path.join(os.path.dirname(sys.executable), "corral")
        argv = [corral, "serve", "--no-enforce", "--listen", f"127.0.0.1:{port}"]
        argv += ["--interval", interval, "--subtree", subtree, "--log-level", "warning"]
        self.port = port
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile),
        )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float) -> float:
        """Seconds until /healthz answers 200 (the first poll is done)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"corral serve exited with status {self.proc.returncode}")
            try:
                if self._get("/healthz", {})[0] == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"corral serve not ready after {timeout} s")

    def scrape(self) -> Scrape:
        """One scrape of /metrics in the text format, on a fresh connection, timed from
        the request to the last byte of the body."""
        t0 = time.perf_counter()
        status, body = self._get("/metrics", {"Accept": "text/plain;version=0.0.4"})
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        match = _LAST.search(body)
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        return Scrape(elapsed, len(body), samples, float(match[1]) if match else None)

    def _get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def fds(self) -> int:
        return int(self.ps.num_fds())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=60)
        finally:
            self._log.close()
        return status
