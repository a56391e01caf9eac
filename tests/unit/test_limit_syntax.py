"""corral's human limit syntax (runtime.cgroupfs.limit_syntax): sizes, CPUs, devices, io.

Table-driven: what each accepted form means, that formatting and parsing round-trip, and that
each rejected form raises InvalidLimit naming the value and the forms allowed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import MAX, InvalidLimit
from runtime.cgroupfs.cpu import QUOTA_MIN_US, CpuMax, parse_cpu_max
from runtime.cgroupfs.io import Device, IoMax
from runtime.cgroupfs.limit_syntax import (
    CPU_FORMS,
    IO_FORMS,
    SIZE_FORMS,
    format_cpus,
    format_size,
    parse_cpus,
    parse_device,
    parse_io_limit,
    parse_size,
)

K, M, G, T, P = (1024**n for n in range(1, 6))

# -- sizes -----------------------------------------------------------------------------------

SIZES = [
    ("0", 0),
    ("1", 1),
    ("1048576", 1 << 20),
    ("1k", K),
    ("512k", 512 * K),
    ("1K", K),
    ("1KB", K),
    ("1KiB", K),
    ("256M", 256 * M),
    ("256m", 256 * M),
    ("1.5G", 3 * G // 2),
    ("1GiB", G),
    ("1gb", G),
    (".5K", 512),
    ("1.5", 1),  # whole bytes, rounded down
    ("2 G", 2 * G),
    (" 64M\n", 64 * M),
    ("100b", 100),
    ("3T", 3 * T),
    ("8191P", 8191 * P),
    ("9223372036854775807", (1 << 63) - 1),
    ("max", MAX),
    ("MAX", MAX),
]


@pytest.mark.parametrize(("text", "value"), SIZES)
def test_parse_size(text: str, value: Any) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1000, "1000"),
        (K, "1K"),
        (K + 1, str(K + 1)),
        (1536 * M, "1536M"),
        (3 * G, "3G"),
        (2 * T, "2T"),
        (5 * P, "5P"),
        (MAX, "max"),
    ],
)
def test_format_size(value: Any, text: str) -> None:
    assert format_size(value) == text
    assert parse_size(text) == value


@pytest.mark.parametrize("value", [v for _, v in SIZES] + [(1 << 63) - 4096, 7 * M + 1])
def test_size_round_trip(value: Any) -> None:
    assert parse_size(format_size(value)) == value


BAD_SIZES = [
    ("-1", SIZE_FORMS),
    ("1.5.2G", SIZE_FORMS),
    ("10X", SIZE_FORMS),
    ("", SIZE_FORMS),
    ("G", SIZE_FORMS),
    ("1e6", SIZE_FORMS),
    ("0x10", SIZE_FORMS),
    ("1iB", SIZE_FORMS),
    ("nan", SIZE_FORMS),
    ("inf", SIZE_FORMS),
    ("12 34", SIZE_FORMS),
    ("8192P", "a size below 8 EiB"),
    ("99999999999999999999", "a size below 8 EiB"),
]


@pytest.mark.parametrize(("text", "allowed"), BAD_SIZES)
def test_bad_size(text: str, allowed: str) -> None:
    with pytest.raises(InvalidLimit) as caught:
        parse_size(text, "--memory")
    assert caught.value.what == "--memory" and caught.value.value == text
    assert repr(text) in str(caught.value) and allowed in str(caught.value)


# -- CPUs ------------------------------------------------------------------------------------

CPUS = [
    ("0.5", CpuMax(50_000, 100_000)),
    ("2", CpuMax(200_000, 100_000)),
    ("0.01", CpuMax(QUOTA_MIN_US, 100_000)),
    ("1.25", CpuMax(125_000, 100_000)),
    ("0.3", CpuMax(30_000, 100_000)),
    ("50000/100000", CpuMax(50_000, 100_000)),
    ("20000/50000", CpuMax(20_000, 50_000)),
    ("1000/1000", CpuMax(1_000, 1_000)),
    ("4000000/1000000", CpuMax(4_000_000, 1_000_000)),
    ("max", CpuMax(MAX, 100_000)),
    (" MAX ", CpuMax(MAX, 100_000)),
    # The kernel's bounds (kernel/sched/core.c, checked in the machine on 6.1): quota up to
    # max_cfs_runtime = (2^44 - 1) us, about 203 days; 17592186044416 is refused (EINVAL).
    ("17592186044415/100000", CpuMax((1 << 44) - 1, 100_000)),
]


@pytest.mark.parametrize(("text", "value"), CPUS)
def test_parse_cpus(text: str, value: CpuMax) -> None:
    assert parse_cpus(text) == value


@pytest.mark.parametrize(
    "value",
    [c for _, c in CPUS]
    + [CpuMax(1_234_567, 100_000), CpuMax(33_333, 100_000), CpuMax(100_001, 100_000)],
    ids=str,
)
def test_cpus_round_trip(value: CpuMax) -> None:
    assert parse_cpus(format_cpus(value)) == value


def test_captured_cpu_max_round_trips(all_captured_files: list[Any]) -> None:
    found = [f for f in all_captured_files if f.name == "cpu.max"]
    assert len(found) > 1
    for f in found:
        value = parse_cpu_max(f.text, str(f))
        assert parse_cpus(format_cpus(value)) == (CpuMax(MAX) if value.quota is MAX else value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (CpuMax(50_000, 100_000), "0.5"),
        (CpuMax(200_000, 100_000), "2"),
        (CpuMax(20_000, 50_000), "20000/50000"),
        (CpuMax(MAX, 100_000), "max"),
    ],
)
def test_format_cpus(value: CpuMax, text: str) -> None:
    assert format_cpus(value) == text


BAD_CPUS = [
    ("0.001", "quota must be"),  # 100 us of quota: below the kernel's 1 ms
    ("1/1", "period must be 1000..1000000 us"),
    ("50000/999", "period must be 1000..1000000 us"),
    ("50000/1000001", "period must be 1000..1000000 us"),
    ("999/100000", "quota must be"),
    ("17592186044416/100000", "quota must be"),
    ("0", CPU_FORMS),
    ("-1", CPU_FORMS),
    ("", CPU_FORMS),
    ("abc", CPU_FORMS),
    ("nan", CPU_FORMS),
    ("inf", CPU_FORMS),
    ("1/", CPU_FORMS),
    ("/100000", CPU_FORMS),
    ("1.5/100000", CPU_FORMS),
    ("50000/0", CPU_FORMS),
    ("-50000/100000", CPU_FORMS),
    ("max/100000", CPU_FORMS),
    ("2 cores", CPU_FORMS),
]


@pytest.mark.parametrize(("text", "allowed"), BAD_CPUS)
def test_bad_cpus(text: str, allowed: str) -> None:
    with pytest.raises(InvalidLimit) as caught:
        parse_cpus(text, "--cpus")
    message = str(caught.value)
    assert caught.value.value == text and message.startswith("--cpus: ")
    assert repr(text) in message and CPU_FORMS in message and allowed in message


# -- devices and io limits -------------------------------------------------------------------


@pytest.fixture
def dev_root(tmp_path: Path) -> Path:
    """A /dev with a real block special file (7:3), a char device and a regular file."""
    dev = tmp_path / "dev"
    dev.mkdir()
    os.mknod(dev / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 3))
    os.mknod(dev / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (dev / "file").write_text("not a device\n")
    return tmp_path


def test_parse_device_forms(dev_root: Path) -> None:
    assert parse_device("8:0") == Device(8, 0)
    assert parse_device(" 259:12 ") == Device(259, 12)
    assert parse_device("/dev/blk", str(dev_root)) == Device(7, 3)


def test_parse_device_on_the_host_dev() -> None:
    """A real block device of this host, resolved through stat(2) of /dev."""
    blocks = sorted(
        e.path for e in os.scandir("/dev") if stat.S_ISBLK(e.stat(follow_symlinks=False).st_mode)
    )
    assert blocks, "no block device under /dev"
    rdev = os.stat(blocks[0]).st_rdev
    assert parse_device(blocks[0]) == Device(os.major(rdev), os.minor(rdev))


BAD_DEVICES = [
    ("/etc/passwd", "a block device (this path is not one)"),
    ("/dev/null", "a block device (this path is not one)"),
    ("/no/such/device", "an existing block device"),
    ("sda", "MAJ:MIN like 8:0, or a block device path like /dev/sda"),
    ("8:", "MAJ:MIN like 8:0"),
    ("", "MAJ:MIN like 8:0"),
]


@pytest.mark.parametrize(("text", "allowed"), BAD_DEVICES)
def test_bad_device(text: str, allowed: str) -> None:
    with pytest.raises(InvalidLimit) as caught:
        parse_device(text)
    assert repr(text) in str(caught.value) and allowed in str(caught.value)


IO_LIMITS = [
    ("8:0 wbps=1M", Device(8, 0), IoMax(wbps=M)),
    ("8:16 rbps=1.5M riops=100 wiops=max", Device(8, 16), IoMax(rbps=3 * M // 2, riops=100)),
    ("254:0 rbps=max wbps=max riops=max wiops=max", Device(254, 0), IoMax()),
    ("254:0 wiops=1 riops=2 wbps=3 rbps=4", Device(254, 0), IoMax(4, 3, 2, 1)),
    ("/dev/blk wbps=10M", Device(7, 3), IoMax(wbps=10 * M)),
]


@pytest.mark.parametrize(("text", "device", "limit"), IO_LIMITS)
def test_parse_io_limit(dev_root: Path, text: str, device: Device, limit: IoMax) -> None:
    assert parse_io_limit(text, str(dev_root)) == (device, limit)


def test_io_limit_line_round_trip() -> None:
    """IoMax.line() is what io.max prints; parsing it back gives the same limit."""
    for text, device, limit in IO_LIMITS:
        line = limit.line(device)
        assert parse_io_limit(line) == (device, limit), text


BAD_IO = [
    # (text, the value the message must show, the form it must name)
    ("8:0 foo=1", "8:0 foo=1", IO_FORMS),
    ("8:0 wbps=1M wbps=2M", "8:0 wbps=1M wbps=2M", "wbps given twice"),
    ("wbps=1M", "wbps=1M", IO_FORMS),
    ("wbps=1M riops=10", "wbps=1M", "MAJ:MIN like 8:0"),
    ("/etc/passwd wbps=1M", "/etc/passwd", "a block device (this path is not one)"),
    ("/dev/chr wbps=1M", "/dev/chr", "a block device (this path is not one)"),
    ("/dev/file wbps=1M", "/dev/file", "a block device (this path is not one)"),
    ("/dev/none wbps=1M", "/dev/none", "an existing block device"),
    ("", "", IO_FORMS),
    ("8:0", "8:0", IO_FORMS),
    ("8:0 wbps", "8:0 wbps", IO_FORMS),
    ("8:0 WBPS=1M", "8:0 WBPS=1M", IO_FORMS),
    ("8:0 wbps=0", "0", "a rate of at least 1"),
    ("8:0 riops=0", "0", "a rate of at least 1"),
    ("8:0 wbps=10X", "10X", SIZE_FORMS),
    ("8:0 wbps=-1", "-1", SIZE_FORMS),
    ("8:0 riops=1.5", "1.5", "an operation count per second or 'max'"),
    ("8:0 riops=1k", "1k", "an operation count per second or 'max'"),
    ("8:0 riops=²", "²", "an operation count per second or 'max'"),
]


@pytest.mark.parametrize(("text", "shown", "allowed"), BAD_IO)
def test_bad_io_limit(dev_root: Path, text: str, shown: str, allowed: str) -> None:
    # /etc/passwd is looked up on the host's real filesystem; /dev/* in the fixture root.
    root = "/" if text.startswith("/etc") else str(dev_root)
    with pytest.raises(InvalidLimit) as caught:
        parse_io_limit(text, root)
    message = str(caught.value)
    assert repr(shown) in message and allowed in message, message
