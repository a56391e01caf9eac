"""Snapshots for the exporter tests, read from cgroup trees with runtime.cgroupfs' read_*
functions (the captured fixture tree, or a temporary tree), plus promtool.

The live collector (monitor.collector) reads the same files; this reader is deliberately
plain so the exporter is tested against exactly what the kernel printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import shutil
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from plain_reader import read_cgroup

from monitor.exporter import Exporter
from monitor.exporter.render import ExportView
from monitor.exporter.server import MetricsServer
from monitor.exporter.webconfig import WebConfig
from monitor.sample import HostSample
from monitor.snapshot import CgroupName, Snapshot, build_snapshot
from runtime.cgroupfs import CgroupFS

KERNEL = "6.1.0-56-amd64"
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "cgroupfs" / KERNEL
GOLDEN = Path(__file__).resolve().parent / "golden"
WALL_TIME = 1795894318.0  # the capture's date, 2026-11-28T19:31:58Z
BUILD = {"version": "0.1.0", "python": "3.11"}
NAMES = {
    "capture/web": CgroupName("capture/web", "container", "web", "3f2a9c1e0b7d"),
    "capture/batch": CgroupName("capture/batch", "slice", "batch.slice"),
}


def read_host(
    fs: CgroupFS, *, wall_time: float = WALL_TIME, monotonic: float = 1000.0
) -> HostSample:
    cgroups = {path: read_cgroup(fs, path) for path in fs.walk()}
    return HostSample(wall_time, monotonic, cgroups, {})


def snapshot_of(
    fs: CgroupFS,
    *,
    seq: int = 1,
    names: Mapping[str, CgroupName] | None = None,
    wall_time: float = WALL_TIME,
) -> Snapshot:
    sample = read_host(fs, wall_time=wall_time)
    return build_snapshot(None, sample, seq=seq, names=names or {}, collect_seconds=0.0125)


def fixture_fs(tmp: Path) -> CgroupFS:
    """A copy of the captured tree (the fixtures stay as captured whatever a test does)."""
    root = tmp / "captured"
    shutil.copytree(FIXTURE, root)
    return CgroupFS(root, verify=False)


def fake_sysfs(tmp: Path) -> str:
    """/sys/dev/block as the capture's machine had it for its scratch disk (254:0 = vda);
    the root's 11:0 (the VM's CD-ROM) is left out, so it shows as MAJ:MIN."""
    uevent = tmp / "sys" / "dev" / "block" / "254:0" / "uevent"
    uevent.parent.mkdir(parents=True)
    uevent.write_text("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n")
    return str(tmp / "sys")


def fixture_view(tmp: Path, *, errors: Mapping[str, int] | None = None) -> ExportView:
    snap = snapshot_of(fixture_fs(tmp), names=NAMES)
    return ExportView(snap, errors or {}, 1.0, fake_sysfs(tmp), BUILD)


def promtool_check(body: bytes) -> str:
    """`promtool check metrics` on ``body``; fails the test with promtool's words."""
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, f"promtool check metrics failed:\n{output}"
    return output


def test_fixture_snapshot_reads_every_cgroup(tmp_path: Path) -> None:
    snap = snapshot_of(fixture_fs(tmp_path))
    assert len(snap.sample.cgroups) == 9
    web = snap.sample.cgroups["capture/web"]
    assert web.cpu is not None and web.cpu.nr_throttled == 182
    assert web.limits.cpu_max is not None and web.limits.cpu_max.cores == 0.2
    assert snap.sample.cgroups["capture/forky"].nr_procs == 8


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(
    url: str,
    path: str = "/metrics",
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    context: ssl.SSLContext | None = None,
) -> Reply:
    """One request on a fresh connection; header names lower-cased."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 0
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@contextlib.contextmanager
def serving(exporter: Exporter, web: WebConfig | None = None) -> Iterator[MetricsServer]:
    """The exporter's real HTTP server on a free loopback port, stopped afterwards."""
    server = MetricsServer(exporter, "127.0.0.1", 0, web)
    server.start()
    try:
        yield server
    finally:
        server.stop()
