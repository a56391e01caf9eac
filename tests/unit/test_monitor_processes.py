"""Per-process detail of a cgroup, on the host's real cgroup2 with real processes."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time

import pytest

from monitor.processes import ProcessSampler
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.cpu import read_cpu_stat

BUSY = "while True: pass"


def start(fs: CgroupFS, cgroup: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """``argv`` running inside ``cgroup`` from its first instruction."""
    return subprocess.Popen(argv, preexec_fn=lambda: fs.move(os.getpid(), cgroup))


def usage_usec(fs: CgroupFS, cgroup: str) -> int:
    stat = read_cpu_stat(fs, cgroup)
    assert stat is not None
    return stat.usage_usec


def test_a_busy_process_in_detail(host: tuple[CgroupFS, str]) -> None:
    fs, cgroup = host
    proc = start(fs, cgroup, [sys.executable, "-I", "-S", "-c", BUSY])
    sampler = ProcessSampler(fs)
    try:
        time.sleep(0.2)
        (first,) = sampler.sample(cgroup)
        used0, t0 = usage_usec(fs, cgroup), time.monotonic()
        time.sleep(0.5)
        (second,) = sampler.sample(cgroup)
        used1, t1 = usage_usec(fs, cgroup), time.monotonic()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert first.cpu_percent is None  # first sight: nothing to measure against
    # /proc's CPU times against the cgroup's cpu.stat over (nearly) the same window.
    by_cgroup = 100.0 * (used1 - used0) / 1e6 / (t1 - t0)
    assert second.cpu_percent is not None
    assert second.cpu_percent == pytest.approx(by_cgroup, rel=0.25), (second, by_cgroup)
    assert second.pid == proc.pid and second.ppid == os.getpid() and second.cgroup == cgroup
    assert second.user == pwd.getpwuid(os.geteuid()).pw_name
    assert second.command == f"{sys.executable} -I -S -c {BUSY}"
    assert second.rss_bytes is not None and second.rss_bytes > 1 << 20
    assert second.state == "running" and second.threads == 1


def test_processes_exiting_mid_read_are_tolerated(host: tuple[CgroupFS, str]) -> None:
    """A shell forking short-lived children as fast as it can while we sample."""
    fs, cgroup = host
    shell = start(fs, cgroup, ["/bin/sh", "-c", "while :; do /bin/true; done"])
    sampler = ProcessSampler(fs)
    seen_children = 0
    try:
        for _ in range(300):
            infos = sampler.sample(cgroup)
            assert shell.pid in [p.pid for p in infos]
            seen_children += len(infos) - 1
    finally:
        shell.send_signal(signal.SIGKILL)
        shell.wait(10)
    assert seen_children > 0, "never caught a child: the test did not race the exits"


def test_recursive_and_gone(host: tuple[CgroupFS, str]) -> None:
    fs, parent = host
    child = f"{parent}/child"
    fs.create(child)
    sleepers = [start(fs, parent, ["sleep", "60"]), start(fs, child, ["sleep", "60"])]
    sampler = ProcessSampler(fs)
    try:
        # Until both have exec'd sleep and gone to sleep (a loaded host may take a moment).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            everything = sampler.sample(parent, recursive=True)
            if all(p.command.startswith("sleep") and p.state == "sleeping" for p in everything):
                break
            time.sleep(0.05)
        direct = sampler.sample(parent)
        everything = sampler.sample(parent, recursive=True)
    finally:
        for p in sleepers:
            p.kill()
            p.wait(10)
    assert [(p.pid, p.cgroup) for p in direct] == [(sleepers[0].pid, parent)]
    assert sorted((p.pid, p.cgroup) for p in everything) == sorted(
        [(sleepers[0].pid, parent), (sleepers[1].pid, child)]
    )
    assert all(p.command.startswith("sleep 60") and p.state == "sleeping" for p in everything)
    fs.remove(child)
    assert sampler.sample(child) == []
    assert sampler.sample(child, recursive=True) == []
