"""The io controller (cgroup-v2.rst "IO"): io.stat, io.max, io.weight.

Devices are named by ``MAJ:MIN``. io.max takes one device per write, any subset of
rbps/wbps/riops/wiops, each a number or ``max``; a device must exist as a block device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from runtime.cgroupfs.errors import InvalidLimit, ParseError
from runtime.cgroupfs.formats import (
    MAX,
    IntOrMax,
    check_int,
    check_int_or_max,
    format_int_or_max,
    is_digits,
    parse_int_or_max,
    parse_nested_keyed,
)
from runtime.cgroupfs.fs import CgroupFS

IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000
RATE_MAX = (1 << 64) - 1


@dataclass(frozen=True, slots=True, order=True)
class Device:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}:{self.minor}"

    @classmethod
    def parse(cls, text: str, source: str = "device") -> Device:
        major, sep, minor = text.strip().partition(":")
        if not sep or not is_digits(major) or not is_digits(minor):
            raise ParseError(source, text, "a device number MAJ:MIN like 8:0")
        return cls(int(major), int(minor))


@dataclass(frozen=True, slots=True)
class IoStat:
    """One device's line of io.stat: bytes and operations since the cgroup was created."""

    rbytes: int = 0
    wbytes: int = 0
    rios: int = 0
    wios: int = 0
    dbytes: int = 0
    dios: int = 0


@dataclass(frozen=True, slots=True)
class IoMax:
    """One device's io.max: each field a rate or MAX."""

    rbps: IntOrMax = MAX
    wbps: IntOrMax = MAX
    riops: IntOrMax = MAX
    wiops: IntOrMax = MAX

    def line(self, device: Device) -> str:
        values = " ".join(f"{k}={format_int_or_max(getattr(self, k))}" for k in IO_MAX_KEYS)
        return f"{device} {values}"


@dataclass(frozen=True, slots=True)
class IoWeight:
    """io.weight: the default and per-device overrides."""

    default: int
    devices: dict[Device, int] = field(default_factory=dict)


def parse_io_stat(text: str, source: str = "io.stat") -> dict[Device, IoStat]:
    out: dict[Device, IoStat] = {}
    for key, fields in parse_nested_keyed(text, source).items():
        known = {k: v for k, v in fields.items() if k in IoStat.__dataclass_fields__}
        if not all(is_digits(v) for v in known.values()):
            raise ParseError(source, f"{key} {fields}", "non-negative integer counters")
        out[Device.parse(key, source)] = IoStat(**{k: int(v) for k, v in known.items()})
    return out


def parse_io_max(text: str, source: str = "io.max") -> dict[Device, IoMax]:
    out: dict[Device, IoMax] = {}
    for key, fields in parse_nested_keyed(text, source).items():
        values = {k: parse_int_or_max(v, source) for k, v in fields.items() if k in IO_MAX_KEYS}
        out[Device.parse(key, source)] = IoMax(**values)
    return out


def parse_io_weight(text: str, source: str = "io.weight") -> IoWeight:
    default = 100
    devices: dict[Device, int] = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) != 2 or not is_digits(words[1]):
            raise ParseError(source, line, "'default N' or 'MAJ:MIN N'")
        if words[0] == "default":
            default = int(words[1])
        else:
            devices[Device.parse(words[0], source)] = int(words[1])
    return IoWeight(default, devices)


def device_exists(device: Device, sysfs: str = "/sys") -> bool:
    """Whether ``device`` is a block device this kernel knows (/sys/dev/block/MAJ:MIN)."""
    return os.path.exists(os.path.join(sysfs, "dev", "block", str(device)))


def read_device_name(device: Device, sysfs: str = "/sys") -> str:
    """The kernel's name for ``device`` (DEVNAME in /sys/dev/block/MAJ:MIN/uevent: "vda",
    "nvme0n1", "dm-0"), else "MAJ:MIN"."""
    path = os.path.join(sysfs, "dev", "block", str(device), "uevent")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "DEVNAME" and value:
                    return value
    except OSError:
        pass
    return str(device)


def validate_io_max(limits: dict[Device, IoMax], sysfs: str = "/sys") -> dict[Device, IoMax]:
    for device, limit in limits.items():
        if not device_exists(device, sysfs):
            raise InvalidLimit(
                "io.max", str(device), "a block device that exists (see /sys/dev/block)"
            )
        for key in IO_MAX_KEYS:
            what = f"io.max {device} {key}"
            check_int_or_max(what, getattr(limit, key), 1, RATE_MAX, "a rate >= 1 or 'max'")
    return limits


def validate_io_weight(weight: int) -> int:
    allowed = f"an integer {WEIGHT_MIN}..{WEIGHT_MAX}"
    return check_int("io.weight", weight, WEIGHT_MIN, WEIGHT_MAX, allowed)


def read_io_stat(fs: CgroupFS, cgroup: str) -> dict[Device, IoStat] | None:
    return fs.read_as(cgroup, "io.stat", parse_io_stat)


def read_io_max(fs: CgroupFS, cgroup: str) -> dict[Device, IoMax] | None:
    return fs.read_as(cgroup, "io.max", parse_io_max)


def read_io_weight(fs: CgroupFS, cgroup: str) -> IoWeight | None:
    return fs.read_as(cgroup, "io.weight", parse_io_weight)


def write_io_max(
    fs: CgroupFS, cgroup: str, limits: dict[Device, IoMax], sysfs: str = "/sys"
) -> None:
    """One write per device (the kernel parses one line per write); all validated first."""
    for device, limit in validate_io_max(limits, sysfs).items():
        fs.write(cgroup, "io.max", limit.line(device))


def write_io_weight(fs: CgroupFS, cgroup: str, weight: int, device: Device | None = None) -> None:
    """The default weight, or one device's. A per-device weight is refused (EOPNOTSUPP)
    until iocost is enabled for that device in the root's io.cost.qos."""
    target = "default" if device is None else str(device)
    fs.write(cgroup, "io.weight", f"{target} {validate_io_weight(weight)}")
