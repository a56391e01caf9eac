"""corral doctor inside the machine: a real cgroup v2 kernel with every controller enabled at
the root (runtime.machine.guest does that before the tests run).

Exit status there: 0. Everything corral needs is present; what is not there is only
information, not degradation: corral's parent cgroup (/sys/fs/cgroup/corral) does not exist
until corral first creates it, the machine is not needed on a unified host, and KVM being
unusable only makes the machine slower.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.kernel

EIGHT = ("user", "pid", "net", "mnt", "ipc", "uts", "cgroup", "time")


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report() -> tuple[int, dict[str, Any]]:
    proc = doctor("--json")
    assert proc.stderr == ""
    return proc.returncode, json.loads(proc.stdout)


def test_layout_is_unified_at_sys_fs_cgroup(report: tuple[int, dict[str, Any]]) -> None:
    _, data = report
    assert data["layout"] == {
        "kind": "unified",
        "cgroup2_mount": "/sys/fs/cgroup",
        "v1_controllers": {},
    }
    assert [m["fstype"] for m in data["mounts"]] == ["cgroup2"]


def test_every_controller_corral_uses_is_available_and_enabled_at_the_root(
    report: tuple[int, dict[str, Any]],
) -> None:
    _, data = report
    root = data["controllers"]["root"]
    assert {"cpu", "memory", "io", "pids", "cpuset"} <= set(root["available"])
    assert {"cpu", "memory", "io", "pids", "cpuset"} <= set(root["enabled"])
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert [status[c] for c in ("cpu", "memory", "io", "pids", "cpuset")] == ["ok"] * 5


def test_psi_cpu_stat_and_all_eight_namespaces(report: tuple[int, dict[str, Any]]) -> None:
    _, data = report
    assert data["psi"]["available"] is True and data["psi"]["error"] is None
    assert data["cpu_stat"] == {"path": "/sys/fs/cgroup/cpu.stat", "usage": True}
    assert {n: r["ok"] for n, r in data["namespaces"].items()} == dict.fromkeys(EIGHT, True)


def test_nothing_missing_so_exit_0(report: tuple[int, dict[str, Any]]) -> None:
    code, data = report
    problems = [c for c in data["checks"] if c["status"] in ("degraded", "missing")]
    assert problems == []
    parent = next(c for c in data["checks"] if c["name"] == "parent")
    assert parent["status"] == "info"  # /sys/fs/cgroup/corral not created yet: not degraded
    assert (code, data["degraded"]) == (0, False)
    assert data["summary"] == (
        "cgroup v2 unified; controllers cpu memory io pids cpuset, cpu.stat usage and PSI "
        "available; all eight namespaces work"
    )


def test_text_report_says_unified_and_exits_0() -> None:
    proc = doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "✓ layout          unified: cgroup2 at /sys/fs/cgroup" in proc.stdout
    assert "verdict: all available (exit status 0)" in proc.stdout
