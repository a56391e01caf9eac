"""LocalSource on this host's real cgroup2 hierarchy (a hybrid layout: no controllers, but
cpu.stat and the PSI files exist in every child), with real processes, and the audit log
tailed from a real file as the enforcer appends to it, rotates it and tears a line."""

from __future__ import annotations

import itertools
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboards.tui.sources.base import CannotSeek, SourceDisconnected
from dashboards.tui.sources.local import AuditTail, LocalSource
from enforce.actions import AuditEntry, Mode, Outcome
from enforce.audit import DEFAULT_AUDIT_LOG, to_json
from monitor.collector import CollectorConfig
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.cpu import read_cpu_stat

BUSY = "while True: pass"


def entry(when: float, outcome: Outcome = Outcome.APPLIED) -> AuditEntry:
    return AuditEntry(
        when, "squeeze", "memory_pressure", "corral/web", "memory.high", "max", "536870912",
        Mode.ENFORCE, outcome, "some avg10 12.0 > 10", {"psi": 12.0},
    )  # fmt: skip


def line(e: AuditEntry) -> bytes:
    return (to_json(e) + "\n").encode()


def usage_usec(fs: CgroupFS, cgroup: str) -> int:
    stat = read_cpu_stat(fs, cgroup)
    assert stat is not None
    return stat.usage_usec


def busy_in(fs: CgroupFS, cgroup: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", BUSY], preexec_fn=lambda: fs.move(os.getpid(), cgroup)
    )


def test_frames_of_a_busy_cgroup_with_its_processes(
    host: tuple[CgroupFS, str], tmp_path: Path
) -> None:
    fs, cgroup = host
    proc = busy_in(fs, cgroup)
    log = tmp_path / "audit.jsonl"
    log.write_bytes(line(entry(1.0)))
    source = LocalSource(
        fs, interval=0.2, audit_log=log, history_seconds=1.0, config=CollectorConfig(cgroup)
    )
    try:
        first = source.next_frame()
        used0, t0 = usage_usec(fs, cgroup), time.monotonic()
        (row,) = source.processes(cgroup) or []
        time.sleep(0.5)
        (again,) = source.processes(cgroup) or []
        used1, t1 = usage_usec(fs, cgroup), time.monotonic()
        frames = [source.next_frame() for _ in range(8)]
        assert source.processes(f"{cgroup}/absent") == []
    finally:
        source.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert (source.label, source.seekable) == ("local", False)
    # The first frame already has rates: it polled twice, FIRST_RATES_SECONDS apart.
    assert set(first.snapshot.sample.cgroups) == {cgroup}
    assert first.snapshot.models[cgroup].cpu_cores is not None
    # One busy loop: up to a core, less on a host busy with other work (its PSI says so).
    busy = 0.0
    for older, newer in itertools.pairwise(frames[-1].history):
        stat0, stat1 = (s.sample.cgroups[cgroup].cpu for s in (older, newer))
        assert stat0 is not None and stat1 is not None
        dt = newer.sample.monotonic - older.sample.monotonic
        by_stat = (stat1.usage_usec - stat0.usage_usec) / 1e6 / dt
        assert newer.models[cgroup].cpu_cores == pytest.approx(by_stat)
        assert 0 <= by_stat < 1.2
        busy += by_stat * dt
    assert busy > 0.01  # it ran
    pressure = frames[-1].snapshot.sample.cgroups[cgroup].pressure
    assert set(pressure) == {"cpu", "memory", "io"}  # PSI without any controller enabled
    assert first.audit == (entry(1.0),) and frames[-1].audit == (entry(1.0),)
    # Processes: psutil over cgroup.procs, CPU in cores since the previous call.
    assert (row.pid, row.cpu_cores) == (proc.pid, 0.0)  # first sight
    assert row.user == pwd.getpwuid(os.geteuid()).pw_name and row.rss_bytes > 1 << 20
    assert row.command == f"{sys.executable} -I -S -c {BUSY}"
    # /proc's CPU times of the one process against the cgroup's cpu.stat, same window.
    assert again.cpu_cores == pytest.approx((used1 - used0) / 1e6 / (t1 - t0), rel=0.25)
    # Frames come an interval apart; the history holds the last second of them.
    walls = [f.snapshot.sample.wall_time for f in frames]
    gaps = [b - a for a, b in itertools.pairwise(walls)]
    assert all(0.15 < g < 0.6 for g in gaps), gaps
    history = frames[-1].history
    assert history[-1] is frames[-1].snapshot and 4 <= len(history) <= 7
    assert history[-1].sample.monotonic - history[0].sample.monotonic <= 1.0
    with pytest.raises(CannotSeek):
        source.seek(-1)
    with pytest.raises(SourceDisconnected, match="local: the source was closed"):
        source.next_frame()


def test_audit_tail_follows_appends_rotation_and_torn_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    tail = AuditTail(log)
    assert tail.read() == []  # no log yet: no enforcer has written
    log.write_bytes(line(entry(1.0)) + line(entry(2.0))[:40])  # a line still being written
    assert tail.read() == [entry(1.0)]
    with log.open("ab") as f:
        f.write(line(entry(2.0))[40:] + b"{not json}\n" + line(entry(3.0, Outcome.REFUSED)))
    assert tail.read() == [entry(2.0), entry(3.0, Outcome.REFUSED)]
    assert tail.skipped == 1
    assert tail.read() == []
    log.rename(tmp_path / "audit.jsonl.1")  # logrotate: a new file under the old name
    log.write_bytes(line(entry(4.0)))
    assert tail.read() == [entry(4.0)]
    log.write_bytes(b"")  # truncated in place (copytruncate), then written again
    assert tail.read() == []
    with log.open("ab") as f:
        f.write(line(entry(5.0)))
    assert tail.read() == [entry(5.0)]
    tail.close()


def test_a_long_log_is_read_from_near_its_end(tmp_path: Path) -> None:
    from dashboards.tui.sources import local

    log = tmp_path / "audit.jsonl"
    one = line(entry(0.0))
    count = local.TAIL_START_BYTES // len(one) * 2
    log.write_bytes(b"".join(line(entry(float(i))) for i in range(count)))
    got = AuditTail(log).read()
    assert [e.time for e in got] == [float(i) for i in range(count - len(got), count)]
    read = sum(len(line(e)) for e in got)  # whole lines only, from within the last 4 MiB
    assert local.TAIL_START_BYTES - len(line(got[0])) < read <= local.TAIL_START_BYTES


def test_defaults_and_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval 0: expected seconds > 0"):
        LocalSource(interval=0)
    source = LocalSource(audit_log=None)
    try:
        assert source.fs.root == CgroupFS.discover().root  # this host's cgroup2 mount
        frame = source.next_frame()
        assert "" in frame.snapshot.sample.cgroups and frame.audit == ()
    finally:
        source.close()
    assert DEFAULT_AUDIT_LOG == "/var/log/corral/audit.jsonl"
