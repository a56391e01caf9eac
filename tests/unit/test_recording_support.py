"""HostSamples for the recording tests: read from cgroup trees with runtime.cgroupfs' read_*
functions (the captured fixture tree, the host's real cgroup2), plus hand-made edge cases.

The live collector (monitor.collector) reads the same files; this reader is deliberately
plain, so a recording is tested against exactly what the kernel printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from plain_reader import read_cgroup

from monitor.recording import RecordingWriter
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName
from runtime.cgroupfs import MAX, CgroupFS, CgroupGone
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.io import Device, IoMax, IoStat
from runtime.cgroupfs.pressure import Pressure, PressureLine

KERNEL = "6.1.0-56-amd64"
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "cgroupfs" / KERNEL


def read_host(fs: CgroupFS, start: str = "", *, with_root: bool = False) -> HostSample:
    """Every cgroup under ``start`` (and the root with ``with_root``); one that vanishes
    while it is read is left out, as the collector does."""
    paths = ([""] if with_root and start else []) + list(fs.walk(start))
    cgroups = {}
    for path in paths:
        try:
            cgroups[path] = read_cgroup(fs, path)
        except CgroupGone:
            continue
    return HostSample(time.time(), time.monotonic(), cgroups, {})


def fixture_fs(tmp: Path) -> CgroupFS:
    """A copy of the captured tree (the fixtures stay as captured whatever a test does)."""
    root = tmp / "captured"
    shutil.copytree(FIXTURE, root)
    return CgroupFS(root, verify=False)


def write_recording(
    path: Path,
    samples: Sequence[HostSample],
    names: Sequence[Mapping[str, CgroupName]] | None = None,
    *,
    keyframe_every: int = 60,
) -> RecordingWriter:
    with RecordingWriter(path, keyframe_every=keyframe_every, meta={"test": True}) as w:
        for i, sample in enumerate(samples):
            w.write(sample, names[i] if names else {}, collect_seconds=0.001 * i)
    return w


class HostTree:
    """Cgroups made under the host's cgroup2 for one test, each holding live processes."""

    def __init__(self, fs: CgroupFS, base: str) -> None:
        self.fs, self.base = fs, base
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}

    def add(self, name: str, *, busy: bool = False) -> str:
        """``base/name`` with one process in it: a busy shell loop or a sleep."""
        path = f"{self.base}/{name}"
        self.fs.create(path)
        argv = ["sh", "-c", "while :; do :; done"] if busy else ["sleep", "600"]
        proc = subprocess.Popen(argv)
        self.fs.move(proc.pid, path)
        self.procs[path] = [proc]
        return path

    def remove(self, name: str) -> None:
        path = f"{self.base}/{name}"
        for proc in self.procs.pop(path, []):
            proc.kill()
            proc.wait()
        _rmdir_when_empty(self.fs, path)

    def sample(self) -> HostSample:
        return read_host(self.fs, self.base, with_root=True)


@contextmanager
def host_tree(host_cgroup2: Path, tag: str) -> Iterator[HostTree]:
    fs = CgroupFS(host_cgroup2)
    tree = HostTree(fs, f"corral-unit-{tag}-{os.getpid()}")
    fs.create(tree.base)
    try:
        yield tree
    finally:
        for path in list(tree.procs):
            tree.remove(path.rpartition("/")[2])
        for child in fs.children(tree.base):
            _rmdir_when_empty(fs, f"{tree.base}/{child}")
        _rmdir_when_empty(fs, tree.base)


def _rmdir_when_empty(fs: CgroupFS, path: str) -> None:
    """rmdir fails EBUSY for a moment after the last process died (it is still exiting)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            fs.remove(path)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def edge_sample(wall_time: float = 1.5e9, *, path: str = 'edge/ünïcode \\ "q"') -> HostSample:
    """Values a plain capture does not show: counters past 2^64, MAX in every limit, zero
    beside None, floats that are not hundredths, a name that is not UTF-8, empty mappings."""
    line = PressureLine(0.1 + 0.2, float("inf"), 1e-300, (1 << 70) + 3)
    odd = CgroupSample(
        path=path,
        cpu=CpuStat(0, 2**64 - 1, 0, None, 0, None, 0, None),
        memory_current=0,
        memory_peak=None,
        memory_stat={},
        swap_current=0,
        io={Device(259, 1 << 20): IoStat(rbytes=2**64 + 5)},
        pressure={"cpu": Pressure(line, None), "io": Pressure(line, line)},
        nr_procs=0,
        limits=Limits(
            cpu_max=CpuMax(MAX, 1_000_000),
            cpu_weight=10_000,
            memory_min=0,
            memory_low=MAX,
            memory_high=MAX,
            memory_max=(1 << 63) - 1,
            swap_max=0,
            io_max={Device(8, 0): IoMax(), Device(8, 16): IoMax(2**64 - 1, 1, MAX, 0)},
            pids_max=MAX,
        ),
    )
    bare = CgroupSample(path="bare\udcff-not-utf8")
    errors = {"gone": 3, "parse": 0}
    return HostSample(wall_time, -12.25, {odd.path: odd, bare.path: bare}, errors)
