"""Every limit kind written through runtime.cgroupfs reads back as the same typed value, and
the kernel's own refusals surface as WriteRejected naming the file and the value.

Byte limits are page multiples: the kernel keeps memory limits in pages and rounds down.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kernel_harness import PAGE, MiB

from runtime.cgroupfs import MAX, CgroupFS, WriteRejected, cpu, cpuset, io, memory, pids
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.io import Device, IoMax, IoWeight
from runtime.cgroupfs.limit_syntax import parse_cpus, parse_size

Write = Callable[[CgroupFS, str, Any], None]
Read = Callable[[CgroupFS, str], Any]


@dataclass(frozen=True)
class Case:
    write: Write
    read: Read
    values: tuple[Any, ...]
    setup: Callable[[CgroupFS, str], None] | None = None
    expect: Callable[[Any], Any] = lambda value: value  # what reading back should give


def memory_case(name: str, *values: Any) -> Case:
    return Case(
        lambda fs, cg, v: memory.write_memory_limit(fs, cg, name, v),
        lambda fs, cg: memory.read_memory_limit(fs, cg, name),
        values,
    )


def cpuset_case(name: str, *values: frozenset[int]) -> Case:
    return Case(
        lambda fs, cg, v: cpuset.write_cpuset(fs, cg, name, v),
        lambda fs, cg: cpuset.read_cpuset(fs, cg, name),
        values,
    )


def quota_50ms(fs: CgroupFS, cg: str) -> None:
    cpu.write_cpu_max(fs, cg, CpuMax(50_000, 100_000))  # cpu.max.burst may not exceed quota


CPUS = frozenset(range(os.cpu_count() or 1))
CASES: dict[str, Case] = {
    "cpu.max": Case(
        cpu.write_cpu_max,
        cpu.read_cpu_max,
        (parse_cpus("0.5"), CpuMax(20_000, 50_000), parse_cpus("1.5"), CpuMax(MAX, 100_000)),
    ),
    "cpu.max.burst": Case(
        cpu.write_cpu_max_burst, cpu.read_cpu_max_burst, (20_000, 50_000, 0), quota_50ms
    ),
    "cpu.weight": Case(cpu.write_cpu_weight, cpu.read_cpu_weight, (1, 250, 10_000, 100)),
    "memory.min": memory_case("memory.min", parse_size("16M"), MAX, 0),
    "memory.low": memory_case("memory.low", parse_size("32M"), MAX, 0),
    "memory.high": memory_case("memory.high", parse_size("256M"), parse_size("1G"), MAX),
    "memory.max": memory_case("memory.max", parse_size("512M"), parse_size("64M"), MAX),
    "memory.swap.max": memory_case("memory.swap.max", 0, parse_size("32M"), MAX),
    "memory.oom.group": Case(
        memory.write_memory_oom_group, memory.read_memory_oom_group, (True, False)
    ),
    "pids.max": Case(pids.write_pids_max, pids.read_pids_max, (42, 0, MAX, 1)),
    "cpuset.cpus": cpuset_case("cpuset.cpus", frozenset({0}), CPUS, frozenset()),
    "cpuset.mems": cpuset_case("cpuset.mems", frozenset({0}), frozenset()),
    "io.weight": Case(
        io.write_io_weight, io.read_io_weight, (300, 10_000, 1, 100), expect=IoWeight
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_limit_round_trips(fs: CgroupFS, cgroup: str, kind: str) -> None:
    case = CASES[kind]
    if case.setup:
        case.setup(fs, cgroup)
    for value in case.values:
        case.write(fs, cgroup, value)
        assert case.read(fs, cgroup) == case.expect(value), f"{kind}: wrote {value!r}"


@pytest.mark.parametrize("name", ["memory.high", "memory.max", "memory.low"])
def test_memory_limits_round_down_to_whole_pages(fs: CgroupFS, cgroup: str, name: str) -> None:
    """Not a byte-exact round trip: the kernel stores memory limits in pages."""
    memory.write_memory_limit(fs, cgroup, name, 64 * MiB + PAGE - 1)
    assert memory.read_memory_limit(fs, cgroup, name) == 64 * MiB


def test_io_max_round_trips(fs: CgroupFS, cgroup: str, scratch_disk: tuple[str, Device]) -> None:
    _, disk = scratch_disk
    for limit in (
        IoMax(wbps=2 * MiB, riops=100),
        IoMax(rbps=parse_size("1M"), wbps=4 * MiB, riops=10, wiops=20),
        IoMax(rbps=512 * 1024),  # a whole line: the keys not given go back to max
    ):
        io.write_io_max(fs, cgroup, {disk: limit})
        assert io.read_io_max(fs, cgroup) == {disk: limit}
    # Every key max is no limit: the kernel drops the device's line altogether.
    io.write_io_max(fs, cgroup, {disk: IoMax()})
    assert io.read_io_max(fs, cgroup) == {}


def test_io_weight_per_device_round_trips(
    fs: CgroupFS, cgroup: str, scratch_disk: tuple[str, Device]
) -> None:
    """A per-device io.weight needs the iocost controller active on that device (the root's
    io.cost.qos); until then the kernel refuses it with EOPNOTSUPP."""
    _, disk = scratch_disk
    err = refusal(lambda: io.write_io_weight(fs, cgroup, 500, disk))
    assert (err.value, err.errno) == (f"{disk} 500", errno.EOPNOTSUPP)
    fs.write("", "io.cost.qos", f"{disk} enable=1")
    try:
        for weight in (500, 1, 10_000):
            io.write_io_weight(fs, cgroup, weight, disk)
            assert io.read_io_weight(fs, cgroup) == IoWeight(100, {disk: weight})
    finally:
        fs.write("", "io.cost.qos", f"{disk} enable=0")


def refusal(write: Callable[[], None]) -> WriteRejected:
    with pytest.raises(WriteRejected) as rejected:
        write()
    return rejected.value


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        # Past nr_cpu_ids: cpulist_parse() says ERANGE.
        pytest.param("cpuset.cpus", frozenset({len(CPUS) + 5}), errno.ERANGE, id="cpus"),
        # A node that parses but is not among the parent's mems: EINVAL.
        pytest.param("cpuset.mems", frozenset({7}), errno.EINVAL, id="mems"),
    ],
)
def test_kernel_refusal_names_path_and_value(
    fs: CgroupFS, cgroup: str, name: str, value: frozenset[int], code: int
) -> None:
    before = cpuset.read_cpuset(fs, cgroup, name)
    err = refusal(lambda: cpuset.write_cpuset(fs, cgroup, name, value))
    text = str(min(value))
    assert err.path == str(fs.path(cgroup) / name)
    assert (err.value, err.errno) == (text, code)
    assert err.path in str(err) and repr(text) in str(err), str(err)
    assert cpuset.read_cpuset(fs, cgroup, name) == before, "a refused write changed the limit"


def test_kernel_refusal_of_burst_above_quota(fs: CgroupFS, cgroup: str) -> None:
    quota_50ms(fs, cgroup)
    err = refusal(lambda: cpu.write_cpu_max_burst(fs, cgroup, 80_000))
    assert err.path.endswith(f"{cgroup}/cpu.max.burst")
    assert (err.value, err.errno) == ("80000", errno.EINVAL)
    assert cpu.read_cpu_max_burst(fs, cgroup) == 0
