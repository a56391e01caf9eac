"""History: the ring's three bounds, windows, series lookups and concurrent use."""

from __future__ import annotations

import threading

import pytest

from monitor.history import History
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import Snapshot, build_snapshot
from runtime.cgroupfs.cpu import CpuStat
from runtime.cgroupfs.memory import MemoryEvents
from runtime.cgroupfs.pressure import Pressure, PressureLine


def _cgroup(path: str, t: int) -> CgroupSample:
    """A cgroup busy at half a core, t seconds into its life."""
    line = PressureLine(1.5, 0.0, 0.0, 1000 * t)
    return CgroupSample(
        path=path,
        cpu=CpuStat(usage_usec=500_000 * t, user_usec=0, system_usec=0),
        memory_current=(t + 1) << 20,
        memory_stat={"anon": t << 20},
        memory_events=MemoryEvents(low=0, high=0, max=0, oom=0, oom_kill=t // 10),
        pressure={"memory": Pressure(line, None)},
        limits=Limits(memory_high=64 << 20),
    )


def _snapshots(count: int, paths: tuple[str, ...] = ("a", "b")) -> list[Snapshot]:
    """One snapshot a second, t = 0 .. count-1."""
    out: list[Snapshot] = []
    prev = None
    for t in range(count):
        cur = HostSample(1000.0 + t, 50.0 + t, {p: _cgroup(p, t) for p in paths})
        out.append(build_snapshot(prev, cur, seq=t + 1, names={}, collect_seconds=0.0))
        prev = cur
    return out


def test_bounded_by_count() -> None:
    history = History(max_snapshots=5, max_cgroup_samples=None)
    for snap in _snapshots(12):
        history.append(snap)
    assert len(history) == 5
    assert [s.seq for s in history.snapshots()] == [8, 9, 10, 11, 12]
    assert history.cgroup_samples == 10


def test_bounded_by_age() -> None:
    history = History(max_snapshots=100, max_age_seconds=3.0)
    for snap in _snapshots(10):
        history.append(snap)
    # The newest is t=9; t=6 is exactly 3 s older and stays, t=5 is dropped.
    assert [s.seq for s in history.snapshots()] == [7, 8, 9, 10]


def test_bounded_by_cgroup_samples() -> None:
    history = History(max_snapshots=100, max_cgroup_samples=7)
    for snap in _snapshots(10):  # two cgroups each
        history.append(snap)
    assert len(history) == 3 and history.cgroup_samples == 6


def test_the_newest_snapshot_is_always_kept() -> None:
    history = History(max_snapshots=1, max_age_seconds=0.0, max_cgroup_samples=1)
    big = _snapshots(3, paths=("a", "b", "c"))
    for snap in big:
        history.append(snap)
    assert history.snapshots() == [big[-1]]
    assert history.latest() is big[-1]


def test_empty() -> None:
    history = History()
    assert history.latest() is None
    assert history.window(10) == [] and history.series("a", "cpu_cores") == []


def test_window() -> None:
    history = History()
    for snap in _snapshots(10):
        history.append(snap)
    assert [s.seq for s in history.window(2.0)] == [8, 9, 10]
    assert [s.seq for s in history.window(0.0)] == [10]
    assert len(history.window(1e9)) == 10


def test_series_of_model_and_sample_fields() -> None:
    history = History()
    for snap in _snapshots(4, paths=("a",)):
        history.append(snap)
    assert history.series("a", "cpu_cores") == [
        (1000.0, None),
        (1001.0, 0.5),
        (1002.0, 0.5),
        (1003.0, 0.5),
    ]
    assert [v for _, v in history.series("a", "memory_current")] == [
        1 << 20,
        2 << 20,
        3 << 20,
        4 << 20,
    ]
    assert [v for _, v in history.series("a", "memory_stat.anon", seconds=1.0)] == [
        2 << 20,
        3 << 20,
    ]
    assert history.series("a", "pressure.memory.some.total_usec")[-1] == (1003.0, 3000)
    assert history.series("a", "pressure.io.some.total_usec")[-1] == (1003.0, None)
    assert history.series("a", "limits.memory_high")[0][1] == 64 << 20
    assert history.series("a", "memory_events.oom_kill")[0][1] == 0
    assert history.series("gone", "cpu_cores") == []


def test_series_names_a_wrong_field() -> None:
    with pytest.raises(ValueError, match="'cpu_usage'"):
        History().series("a", "cpu_usage")


@pytest.mark.parametrize(
    "kwargs", [{"max_snapshots": 0}, {"max_age_seconds": -1.0}, {"max_cgroup_samples": 0}]
)
def test_bad_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        History(**kwargs)  # type: ignore[arg-type]


def test_concurrent_appends_and_reads() -> None:
    """The poller appends while readers take windows and series: never a torn view."""
    snaps = _snapshots(2000, paths=("a",))
    history = History(max_snapshots=50)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                window = history.window(1e9)
                seqs = [s.seq for s in window]
                assert seqs == sorted(seqs) and len(seqs) <= 50
                if seqs:
                    assert seqs[-1] - seqs[0] == len(seqs) - 1
                history.series("a", "cpu_cores")
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    for snap in snaps:
        history.append(snap)
    done.set()
    for r in readers:
        r.join(10)
    assert not errors, errors
    assert [s.seq for s in history.snapshots()] == list(range(1951, 2001))
