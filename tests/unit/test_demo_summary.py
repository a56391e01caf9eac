"""The headless demo's summary from the agent's JSON: two polls as /api/v1/history sends them
(encoded by the API's own encoder), audit entries as /api/v1/audit sends them, and a
/metrics exposition."""

from __future__ import annotations

import json

import pytest

from corral.demo.summary import (
    Captured,
    SummaryError,
    format_summary,
    latest,
    series_counts,
)
from monitor.exporter.api import encode_snapshot
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName, build_snapshot
from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoStat
from runtime.cgroupfs.pids import PidsEvents

MiB = 1 << 20
HOG, LEAK, FORKS = "corral/aaa", "corral/demo-pool/bbb", "corral/ccc"
NAMES = {
    HOG: CgroupName(HOG, "container", "demo-cpu-hog", "aaa"),
    LEAK: CgroupName(LEAK, "container", "demo-leak", "bbb"),
    FORKS: CgroupName(FORKS, "container", "demo-fork-storm", "ccc"),
    "corral/web": CgroupName("corral/web", "container", "web"),
}


def poll(seq: int, t: float, hog_usec: int, written: int) -> dict[str, object]:
    """One poll as /api/v1/history encodes it: the hog at 0.5 core, the leak killed (its
    cgroup empty), the fork storm at its pids.max with 40 forks refused."""
    cgroups = {
        HOG: CgroupSample(
            HOG,
            cpu=CpuStat(hog_usec, hog_usec, 0, 10 * seq, 9 * seq, 0),
            memory_current=300 * 1024,
            io={Device(254, 0): IoStat(wbytes=written)},
            pids_current=1,
            events=CgroupEvents(populated=True, frozen=False),
            limits=Limits(cpu_max=CpuMax(50_000), memory_max=64 * MiB, memory_high=MAX),
        ),
        LEAK: CgroupSample(
            LEAK,
            memory_current=0,
            events=CgroupEvents(populated=False, frozen=True),
            limits=Limits(memory_high=64 * MiB, memory_max=256 * MiB),
        ),
        FORKS: CgroupSample(
            FORKS,
            pids_current=32,
            pids_events=PidsEvents(max=40),
            limits=Limits(pids_max=32),
        ),
    }
    sample = HostSample(1_800_000_000.0 + t, t, cgroups)
    snap = build_snapshot(None, sample, seq=seq, names=NAMES, collect_seconds=0.01)
    encoded = encode_snapshot(snap)
    return json.loads(json.dumps(encoded))  # type: ignore[no-any-return]


AUDIT = {
    "enforcer": True,
    "truncated": False,
    "entries": [
        {"time": 1_800_000_050.0, "rule": "leak", "controller": "oom_guard", "cgroup": LEAK,
         "file": "cgroup.kill", "old": None, "new": "1", "mode": "enforce",
         "outcome": "applied", "reason": "kill: corral/demo-pool memory full avg10 56%",
         "inputs": {}},
        {"time": 1_800_000_010.0, "rule": "cpu-hog", "controller": "cpu_quota", "cgroup": HOG,
         "file": "cpu.max", "old": "20000 100000", "new": "50000 100000", "mode": "enforce",
         "outcome": "applied", "reason": "throttled 100% > 10% for 2 ticks", "inputs": {}},
    ],
}  # fmt: skip

METRICS = f"""# HELP corral_cpu_usage_seconds_total cpu.stat usage_usec
# TYPE corral_cpu_usage_seconds_total counter
corral_cpu_usage_seconds_total{{cgroup="{HOG}"}} 12.5
corral_cpu_usage_seconds_total{{cgroup="{LEAK}"}} 3.0
corral_cpu_usage_seconds_total{{cgroup="corral/web"}} 1.0
corral_cgroup_info{{cgroup="{HOG}",kind="container",name="demo-cpu-hog",id="aaa"}} 1
corral_last_collect_timestamp_seconds 1.8e9
"""


def captured() -> Captured:
    polls = [poll(1, 100.0, 1_000_000, 0), poll(11, 110.0, 6_000_000, 40 * MiB)]
    history = {"latest_seq": 11, "truncated": False, "snapshots": polls}
    return Captured("http://127.0.0.1:19847", history, AUDIT, METRICS)


def test_figures_are_rates_over_the_polls_sent() -> None:
    snap = latest(captured().history)
    model = snap.models[HOG]
    assert model.cpu_cores == pytest.approx(0.5)
    assert model.io_write_bytes_per_second == pytest.approx(4 * MiB)


def test_summary_lists_containers_actions_and_the_scrape() -> None:
    text = format_summary(captured(), ["no scratch disk"])
    lines = text.splitlines()
    hog = next(ln for ln in lines if ln.startswith("  demo-cpu-hog"))
    assert "running" in hog and "cpu 0.50/0.5" in hog and "max 64M" in hog
    assert "io written 40M (4.0M/s)" in hog and "mem 0.3M" in hog
    leak = next(ln for ln in lines if ln.startswith("  demo-leak"))
    assert "stopped" in leak and "high 64M max 256M" in leak
    forks = next(ln for ln in lines if ln.startswith("  demo-fork-storm"))
    assert "pids 32/32 refused 40" in forks
    missing = next(ln for ln in lines if ln.startswith("  demo-steady"))
    assert "not found" in missing
    # the actions, oldest first, with the container's name instead of its cgroup
    actions = [ln for ln in lines if ln.startswith("  ") and "[applied]" in ln]
    assert actions == [
        "  08:00:10 demo-cpu-hog       cpu_quota       cpu.max 20000 100000 -> 50000 100000"
        " [applied] throttled 100% > 10% for 2 ticks",
        "  08:00:50 demo-leak          oom_guard       cgroup.kill - -> 1 [applied] kill:"
        " corral/demo-pool memory full avg10 56%",
    ]
    assert "corral demo: 2 enforcer action(s) (UTC)" in lines
    quiet = "demo-steady, demo-cache-grower, demo-fork-storm, demo-io-writer"
    assert f"corral demo: no action on {quiet}" in lines
    assert "corral demo: note: no scratch disk" in lines
    assert lines[-1].startswith(
        "corral demo: scraped http://127.0.0.1:19847/metrics: 5 series, 3 of them for the demo "
        "containers"
    )


def test_series_counts_by_cgroup_label() -> None:
    assert series_counts(METRICS, [HOG]) == (5, 2)
    assert series_counts(METRICS, []) == (5, 0)
    assert series_counts("# only comments\n\n", [HOG]) == (0, 0)


def test_no_audit_entries_says_none() -> None:
    empty = Captured("http://h:1", captured().history, {"entries": []}, METRICS)
    lines = format_summary(empty).splitlines()
    assert lines[lines.index("corral demo: 0 enforcer action(s) (UTC)") + 1] == "  none"


def test_an_empty_history_is_an_error() -> None:
    with pytest.raises(SummaryError, match="no poll"):
        format_summary(Captured("http://h:1", {"snapshots": []}, AUDIT, METRICS))
