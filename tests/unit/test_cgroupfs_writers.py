"""The write_* functions: a bad value raises InvalidLimit before anything is written; a good
one is written as the kernel reads it; memory.high is opened with O_NONBLOCK.

The cgroup ``g`` of the ``seeded`` fake root holds the files of a captured cgroup (conftest).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import MAX, CgroupError, CgroupFS, InvalidLimit, cpu, cpuset, io, memory, pids
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.io import Device, IoMax

Snapshot = Callable[[Path], dict[str, tuple[bytes, int]]]  # the conftest fixture

# -- bad values raise before anything is written ----------------------------------------------

NO_SUCH_DEVICE = Device(4095, 1048575)  # no block device has this number


def _a_real_block_device() -> Device:
    entries = sorted(os.listdir("/sys/dev/block"))
    assert entries, "this host has no block device in /sys/dev/block"
    return Device.parse(entries[0])


BAD_WRITES: list[tuple[str, Callable[[CgroupFS], None]]] = [
    ("cpu.max quota too small", lambda fs: cpu.write_cpu_max(fs, "g", CpuMax(999, 100_000))),
    ("cpu.max period too small", lambda fs: cpu.write_cpu_max(fs, "g", CpuMax(MAX, 999))),
    ("cpu.max period too big", lambda fs: cpu.write_cpu_max(fs, "g", CpuMax(1000, 1_000_001))),
    ("cpu.weight 0", lambda fs: cpu.write_cpu_weight(fs, "g", 0)),
    ("cpu.weight 10001", lambda fs: cpu.write_cpu_weight(fs, "g", 10_001)),
    ("cpu.weight bool", lambda fs: cpu.write_cpu_weight(fs, "g", True)),
    ("cpu.weight str", lambda fs: cpu.write_cpu_weight(fs, "g", "100")),  # type: ignore[arg-type]
    ("cpu.max.burst -1", lambda fs: cpu.write_cpu_max_burst(fs, "g", -1)),
    ("cpu.max.burst float", lambda fs: cpu.write_cpu_max_burst(fs, "g", 1.5)),  # type: ignore[arg-type]
    *[
        (f"{name} -1", lambda fs, n=name: memory.write_memory_limit(fs, "g", n, -1))
        for name in memory.LIMIT_FILES
    ],
    *[
        (f"{name} 2^63", lambda fs, n=name: memory.write_memory_limit(fs, "g", n, 1 << 63))
        for name in memory.LIMIT_FILES
    ],
    ("memory.high str", lambda fs: memory.write_memory_limit(fs, "g", "memory.high", "1G")),  # type: ignore[arg-type]
    ("memory.max float", lambda fs: memory.write_memory_limit(fs, "g", "memory.max", 1.5)),  # type: ignore[arg-type]
    ("memory.low bool", lambda fs: memory.write_memory_limit(fs, "g", "memory.low", True)),
    ("memory.current", lambda fs: memory.write_memory_limit(fs, "g", "memory.current", 0)),
    ("pids.max -1", lambda fs: pids.write_pids_max(fs, "g", -1)),
    ("pids.max too big", lambda fs: pids.write_pids_max(fs, "g", pids.PIDS_LIMIT + 1)),
    ("pids.max str", lambda fs: pids.write_pids_max(fs, "g", "10")),  # type: ignore[arg-type]
    (
        "io.max no such device",
        lambda fs: io.write_io_max(fs, "g", {NO_SUCH_DEVICE: IoMax(wbps=1 << 20)}),
    ),
    (
        "io.max second device missing",
        lambda fs: io.write_io_max(
            fs, "g", {_a_real_block_device(): IoMax(wbps=1 << 20), NO_SUCH_DEVICE: IoMax()}
        ),
    ),
    ("io.max rate 0", lambda fs: io.write_io_max(fs, "g", {_a_real_block_device(): IoMax(0)})),
    (
        "io.max rate 2^64",
        lambda fs: io.write_io_max(fs, "g", {_a_real_block_device(): IoMax(riops=1 << 64)}),
    ),
    ("io.weight 0", lambda fs: io.write_io_weight(fs, "g", 0)),
    ("io.weight 10001", lambda fs: io.write_io_weight(fs, "g", 10_001)),
    ("io.weight str", lambda fs: io.write_io_weight(fs, "g", "50")),  # type: ignore[arg-type]
    ("cpuset negative", lambda fs: cpuset.write_cpuset(fs, "g", "cpuset.cpus", frozenset({-1}))),
    ("cpuset str", lambda fs: cpuset.write_cpuset(fs, "g", "cpuset.mems", frozenset({"0"}))),  # type: ignore[arg-type]
    (
        "cpuset effective",
        lambda fs: cpuset.write_cpuset(fs, "g", "cpuset.cpus.effective", frozenset({0})),
    ),
]


@pytest.mark.parametrize("write", [w for _, w in BAD_WRITES], ids=[i for i, _ in BAD_WRITES])
def test_bad_value_changes_nothing(
    seeded: CgroupFS, snapshot: Snapshot, write: Callable[[CgroupFS], None]
) -> None:
    before = snapshot(seeded.root)
    with pytest.raises(InvalidLimit) as caught:
        write(seeded)
    assert caught.value.allowed in str(caught.value)
    assert repr(caught.value.value) in str(caught.value)
    assert snapshot(seeded.root) == before


def test_good_values_are_written_as_the_kernel_reads_them(seeded: CgroupFS) -> None:
    """The text each writer produces parses back (through the readers) to what was given."""
    g = seeded.root / "g"
    device = _a_real_block_device()
    cases: list[tuple[str, Callable[[], None], Callable[[], Any], Any]] = [
        (
            "cpu.max",
            lambda: cpu.write_cpu_max(seeded, "g", CpuMax(25_000, 50_000)),
            lambda: cpu.read_cpu_max(seeded, "g"),
            CpuMax(25_000, 50_000),
        ),
        (
            "memory.high",
            lambda: memory.write_memory_limit(seeded, "g", "memory.high", MAX),
            lambda: memory.read_memory_limit(seeded, "g", "memory.high"),
            MAX,
        ),
        (
            "pids.max",
            lambda: pids.write_pids_max(seeded, "g", 8),
            lambda: pids.read_pids_max(seeded, "g"),
            8,
        ),
        (
            "io.max",
            lambda: io.write_io_max(seeded, "g", {device: IoMax(wbps=4 << 20)}),
            lambda: io.read_io_max(seeded, "g"),
            {device: IoMax(wbps=4 << 20)},
        ),
        (
            "cpuset.cpus",
            lambda: cpuset.write_cpuset(seeded, "g", "cpuset.cpus", frozenset({0, 1, 3})),
            lambda: cpuset.read_cpuset(seeded, "g", "cpuset.cpus"),
            frozenset({0, 1, 3}),
        ),
    ]
    for name, write, read, want in cases:
        (g / name).write_text("")  # a regular file is not truncated by open(O_WRONLY)
        write()
        assert read() == want, name


# -- memory.high is opened with O_NONBLOCK -------------------------------------------------------


def _attempt(write: Callable[[], None], fifo: Path, wait: float) -> tuple[bool, Any, bytes]:
    """Run ``write`` in a thread; (did it block, its outcome, what a late reader got).

    A blocked open of a FIFO is released by opening the read end, so nothing can hang.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            write()
            outcome.append(None)
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(wait)
    blocked = thread.is_alive()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        thread.join(5)
        assert not thread.is_alive()
        try:
            data = os.read(reader, 100)
        except BlockingIOError:
            data = b""
    finally:
        os.close(reader)
    return blocked, outcome[0], data


def test_memory_high_opens_nonblocking(seeded: CgroupFS) -> None:
    """A FIFO stands in for memory.high: O_NONBLOCK open with no reader fails ENXIO at once
    (fifo(7)) where a blocking open waits; memory.max, opened normally, waits."""
    for name in ("memory.high", "memory.max"):
        (seeded.root / "g" / name).unlink()
        os.mkfifo(seeded.root / "g" / name)

    def write(name: str) -> Callable[[], None]:
        return lambda: memory.write_memory_limit(seeded, "g", name, 1 << 20)

    blocked, outcome, _ = _attempt(write("memory.high"), seeded.root / "g/memory.high", 1.0)
    assert not blocked and isinstance(outcome, CgroupError)
    assert os.strerror(errno.ENXIO) in str(outcome) and "memory.high" in str(outcome)

    blocked, outcome, data = _attempt(write("memory.max"), seeded.root / "g/memory.max", 0.3)
    assert blocked and outcome is None and data == b"1048576"

    # With a reader present the non-blocking open succeeds and the value arrives in one write.
    reader = os.open(seeded.root / "g/memory.high", os.O_RDONLY | os.O_NONBLOCK)
    try:
        write("memory.high")()
        assert os.read(reader, 100) == b"1048576"
    finally:
        os.close(reader)
