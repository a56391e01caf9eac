"""parse_limits: the `corral run` / `corral update` limit options, docker's rules, and every
error naming the option, the value and the allowed form; config.json round trips."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import MAX, InvalidLimit
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.io import Device
from runtime.container.limits import (
    MIN_MEMORY,
    ContainerLimits,
    IoLimit,
    limits_from_dict,
    limits_to_dict,
    merged,
    parse_limits,
    read_online_cpus,
)

MiB = 1 << 20


@pytest.fixture
def online(tmp_path: Path) -> str:
    """A CPU list file standing for /sys/devices/system/cpu/online: four CPUs, 0-3."""
    path = tmp_path / "online"
    path.write_text("0-3\n")
    return str(path)


@pytest.fixture
def block(tmp_path: Path) -> tuple[str, Device]:
    """A block device node (mknod) for a device this kernel has, and its MAJ:MIN."""
    entries = sorted(os.listdir("/sys/dev/block"))
    assert entries, "this host has no block device in /sys/dev/block"
    device = Device.parse(entries[0])
    node = tmp_path / "disk"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(device.major, device.minor))
    return str(node), device


def test_nothing_asked_is_all_none() -> None:
    limits = parse_limits()
    assert limits == ContainerLimits()
    assert limits.asked() == []


def test_every_option_parses_to_what_the_kernel_files_take(
    online: str, block: tuple[str, Device]
) -> None:
    disk, device = block
    limits = parse_limits(
        memory="64m",
        memory_high="48m",
        memory_swap="96m",
        cpus="1.5",
        cpu_weight="500",
        cpuset_cpus="3,0-1",
        pids_limit="50",
        device_read_bps=[f"{disk}:1m"],
        device_write_bps=[f"{disk}:2mb"],
        device_read_iops=[f"{disk}:100"],
        device_write_iops=[f"{disk}:50"],
        cpu_online=online,
    )
    assert limits == ContainerLimits(
        memory=64 * MiB,
        memory_high=48 * MiB,
        memory_swap=96 * MiB,
        cpus=CpuMax(150_000, 100_000),
        cpu_weight=500,
        cpuset_cpus="0-1,3",
        pids_limit=50,
        io=(
            IoLimit(device, "rbps", MiB, disk),
            IoLimit(device, "wbps", 2 * MiB, disk),
            IoLimit(device, "riops", 100, disk),
            IoLimit(device, "wiops", 50, disk),
        ),
    )
    assert [option for _, option, _ in limits.asked()] == [
        "--memory",
        "--memory-high",
        "--memory-swap",
        "--cpus",
        "--cpu-weight",
        "--cpuset-cpus",
        "--pids-limit",
        "--device-read-bps",
        "--device-write-bps",
        "--device-read-iops",
        "--device-write-iops",
    ]
    assert limits.asked()[0] == ("memory", "--memory", "64M")
    assert limits.io[0].option == "--device-read-bps"


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({"memory": "6m"}, "memory", MIN_MEMORY),
        ({"memory": "1.5g"}, "memory", 1536 * MiB),
        ({"memory": "6291456"}, "memory", 6291456),
        ({"memory_high": "max"}, "memory_high", MAX),
        ({"memory": "64m", "memory_swap": "64m"}, "memory_swap", 64 * MiB),  # no swap
        ({"memory": "64m", "memory_swap": "-1"}, "memory_swap", MAX),
        ({"memory": "64m", "memory_swap": "max"}, "memory_swap", MAX),
        ({"memory_swap": "128m", "update": True}, "memory_swap", 128 * MiB),
        ({"cpus": "0.01"}, "cpus", CpuMax(1000, 100_000)),
        ({"cpus": "4"}, "cpus", CpuMax(400_000, 100_000)),
        ({"cpus": "50000/200000"}, "cpus", CpuMax(50_000, 200_000)),
        ({"cpus": "max"}, "cpus", CpuMax(MAX, 100_000)),
        ({"cpu_weight": 1}, "cpu_weight", 1),
        ({"cpu_weight": "10000"}, "cpu_weight", 10_000),
        ({"cpuset_cpus": "2"}, "cpuset_cpus", "2"),
        ({"cpuset_cpus": "0,1,2,3"}, "cpuset_cpus", "0-3"),
        ({"pids_limit": "-1"}, "pids_limit", MAX),
        ({"pids_limit": "max"}, "pids_limit", MAX),
        ({"pids_limit": 1}, "pids_limit", 1),
    ],
)
def test_accepted_forms(options: dict[str, Any], field: str, value: object, online: str) -> None:
    assert getattr(parse_limits(**options, cpu_online=online), field) == value


SIZE = "a size like 64m, 1.5g or 67108864 (bytes), at least 6m"
SWAP = "memory plus swap: a size at least --memory"
CPUS = "cores from 0.01 to 4 (this host has 4 CPUs online)"
CPUSET = "CPU numbers like 0-1,3 among the CPUs online here (0-3)"
PIDS = "a process count of at least 1, or -1 (or 'max') for unlimited"
WEIGHT = "an integer 1..10000"
IO = "DEVICE:RATE with DEVICE a block device path like /dev/sda"
NOT_BLOCK = "a block device (this path is not one)"  # limit_syntax.parse_device's words
MISSING = "an existing block device (No such file"

BAD: list[tuple[dict[str, Any], str, str, str]] = [
    # docker refuses less than 6 MiB: "Minimum memory limit allowed is 6MB" (6291456 bytes).
    ({"memory": "4m"}, "--memory", "4m", SIZE + " (docker's minimum, 6291456 bytes)"),
    ({"memory": "6291455"}, "--memory", "6291455", "docker's minimum"),
    ({"memory": "0"}, "--memory", "0", SIZE),
    ({"memory": "max"}, "--memory", "max", SIZE),
    ({"memory": "lots"}, "--memory", "lots", SIZE),
    ({"memory": "-1"}, "--memory", "-1", SIZE),
    ({"memory": "64x"}, "--memory", "64x", SIZE),
    ({"memory_high": "1m"}, "--memory-high", "1m", "at least 6m, or 'max' (as --memory)"),
    ({"memory_high": "x"}, "--memory-high", "x", "a size like 64m, at least 6m, or 'max'"),
    ({"memory": "32m", "memory_high": "64m"}, "--memory-high", "64m", "at most --memory (32M)"),
    # docker: "You should always set the Memory limit when using Memoryswap limit".
    ({"memory_swap": "1g"}, "--memory-swap", "1g", SWAP + " (equal: no swap), or -1 "),
    ({"memory_swap": "1g"}, "--memory-swap", "1g", "; it needs --memory"),
    # docker: "Minimum memoryswap limit should be larger than memory limit".
    ({"memory": "64m", "memory_swap": "32m"}, "--memory-swap", "32m", "at least --memory (64M)"),
    ({"memory": "64m", "memory_swap": "-2"}, "--memory-swap", "-2", SWAP),
    ({"cpus": "0"}, "--cpus", "0", CPUS),
    ({"cpus": "0.005"}, "--cpus", "0.005", CPUS),
    ({"cpus": "4.5"}, "--cpus", "4.5", CPUS),
    ({"cpus": "-1"}, "--cpus", "-1", CPUS),
    ({"cpus": "nan"}, "--cpus", "nan", "QUOTA/PERIOD in microseconds like 50000/100000, or 'max'"),
    ({"cpus": "500000/100000"}, "--cpus", "500000/100000", CPUS),
    ({"cpus": "1000/999"}, "--cpus", "1000/999", CPUS),
    ({"cpu_weight": "0"}, "--cpu-weight", "0", WEIGHT),
    ({"cpu_weight": "10001"}, "--cpu-weight", "10001", WEIGHT),
    ({"cpu_weight": "1.5"}, "--cpu-weight", "1.5", WEIGHT),
    ({"cpuset_cpus": "4"}, "--cpuset-cpus", "4", CPUSET),
    ({"cpuset_cpus": "0-7"}, "--cpuset-cpus", "0-7", CPUSET),
    ({"cpuset_cpus": ""}, "--cpuset-cpus", "", CPUSET),
    ({"cpuset_cpus": "3-1"}, "--cpuset-cpus", "3-1", CPUSET),
    ({"cpuset_cpus": "a"}, "--cpuset-cpus", "a", CPUSET),
    ({"pids_limit": "0"}, "--pids-limit", "0", PIDS),
    ({"pids_limit": "-2"}, "--pids-limit", "-2", PIDS),
    ({"pids_limit": "ten"}, "--pids-limit", "ten", PIDS),
    ({"pids_limit": "4194305"}, "--pids-limit", "4194305", "a count 0..4194304 or 'max'"),
]


@pytest.mark.parametrize(("options", "option", "value", "allowed"), BAD)
def test_bad_values_name_the_option_the_value_and_the_allowed_form(
    options: dict[str, Any], option: str, value: str, allowed: str, online: str
) -> None:
    with pytest.raises(InvalidLimit) as caught:
        parse_limits(**options, cpu_online=online)
    assert caught.value.what == option
    assert caught.value.value == value
    assert str(caught.value).startswith(f"{option}: invalid value {value!r}: ")
    assert allowed in str(caught.value)


def test_cpus_and_cpuset_are_checked_against_the_hosts_online_cpus() -> None:
    online = read_online_cpus()
    assert online, "/sys/devices/system/cpu/online lists no CPU"
    beyond = max(online) + 1
    with pytest.raises(InvalidLimit, match=rf"--cpuset-cpus: invalid value '{beyond}'"):
        parse_limits(cpuset_cpus=str(beyond))
    with pytest.raises(InvalidLimit, match=rf"from 0.01 to {len(online)} \(this host has"):
        parse_limits(cpus=str(len(online) + 1))
    assert parse_limits(cpus=str(len(online))).cpus == CpuMax(len(online) * 100_000)


@pytest.mark.parametrize("option", ["read_bps", "write_bps", "read_iops", "write_iops"])
def test_device_options_resolve_the_path_to_maj_min(option: str, block: tuple[str, Device]) -> None:
    disk, device = block
    options: dict[str, Any] = {f"device_{option}": [f"{disk}:10"]}
    limits = parse_limits(**options)
    kind = option.replace("read_", "r").replace("write_", "w")
    assert limits.io == (IoLimit(device, kind, 10, disk),)  # type: ignore[arg-type]


def test_bad_device_options(tmp_path: Path, block: tuple[str, Device]) -> None:
    disk, _ = block
    regular = tmp_path / "file"
    regular.write_text("")
    missing = Device(4095, 1048575)  # no block device has this number
    ghost = tmp_path / "ghost"
    os.mknod(ghost, stat.S_IFBLK | 0o600, os.makedev(missing.major, missing.minor))
    cases = [
        (
            "device_read_bps",
            f"{regular}:1m",
            f"{regular}: a block device (this path is not one); expected {IO}",
        ),
        ("device_read_bps", "/dev/null:1m", f"/dev/null: {NOT_BLOCK}"),
        (
            "device_write_bps",
            f"{tmp_path}/none:1m",
            f"{tmp_path}/none: an existing block device (No such file",
        ),
        ("device_write_bps", f"{ghost}:1m", f"{ghost} is device 4095:1048575, which this kernel"),
        ("device_read_iops", "sda:100", IO),
        ("device_read_iops", disk, IO),
        ("device_read_iops", f"{disk}:", IO),
        ("device_read_iops", f"{disk}:1.5", "RATE operations per second like 100, at least 1"),
        ("device_write_iops", f"{disk}:0", "at least 1"),
        ("device_read_bps", f"{disk}:0", "RATE bytes per second like 10m or 1048576, at least 1"),
        ("device_read_bps", f"{disk}:max", "at least 1"),
        ("device_read_bps", f"{disk}:fast", "at least 1"),
    ]
    for key, value, allowed in cases:
        option = "--" + key.replace("_", "-")
        with pytest.raises(InvalidLimit) as caught:
            parse_limits(**{key: [value]})  # type: ignore[arg-type]
        assert (caught.value.what, caught.value.value) == (option, value)
        assert allowed in str(caught.value), str(caught.value)


def test_a_device_given_twice_for_one_option_is_refused(block: tuple[str, Device]) -> None:
    disk, device = block
    with pytest.raises(InvalidLimit, match=rf"--device-read-bps: .*\({device}\) given twice"):
        parse_limits(device_read_bps=[f"{disk}:1m", f"{disk}:2m"])
    both = parse_limits(device_read_bps=[f"{disk}:1m"], device_write_bps=[f"{disk}:2m"])
    assert [i.kind for i in both.io] == ["rbps", "wbps"]


def test_config_json_round_trip(online: str, block: tuple[str, Device]) -> None:
    disk, _ = block
    for limits in (
        ContainerLimits(),
        parse_limits(
            memory="64m",
            memory_high="max",
            memory_swap="-1",
            cpus="50000/200000",
            cpu_weight="7",
            cpuset_cpus="1,3",
            pids_limit="-1",
            device_write_iops=[f"{disk}:9"],
            cpu_online=online,
        ),
        parse_limits(cpus="max", pids_limit="12", cpu_online=online),
    ):
        data = json.loads(json.dumps(limits_to_dict(limits)))
        assert limits_from_dict(data) == limits
    assert limits_to_dict(parse_limits(memory="64m", memory_swap="-1")) == {
        "memory": 64 * MiB,
        "memory_high": None,
        "memory_swap": "max",
        "cpus": None,
        "cpu_weight": None,
        "cpuset_cpus": None,
        "pids_limit": None,
        "io": [],
    }
    assert limits_from_dict({}) == ContainerLimits()


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ({"memory": "64m"}, "limits.memory"),
        ({"memory": "max"}, "limits.memory"),
        ({"memory_high": True}, "limits.memory_high"),
        ({"cpus": "1.5"}, "limits.cpus"),
        ({"cpus": {"quota": 1000}}, "limits.cpus"),
        ({"cpu_weight": 1.5}, "limits.cpu_weight"),
        ({"cpuset_cpus": 3}, "limits.cpuset_cpus"),
        ({"cpuset_cpus": "0-x"}, "limits.cpuset_cpus"),
        ({"io": [{"kind": "xbps"}]}, "limits.io"),
        ({"io": [{"kind": "rbps", "rate": "1", "path": "/dev/x", "device": "8:0"}]}, "limits.io"),
        ({"io": [{"kind": "rbps", "rate": 1, "path": "/dev/x", "device": "sda"}]}, "limits.io"),
    ],
)
def test_malformed_config_names_the_key(data: dict[str, Any], what: str) -> None:
    with pytest.raises(InvalidLimit) as caught:
        limits_from_dict(data)
    assert caught.value.what == what


def test_merged_keeps_what_an_update_does_not_name(block: tuple[str, Device]) -> None:
    path, _ = block
    old = parse_limits(memory="64m", pids_limit="20", device_write_bps=(f"{path}:1m",))
    new = parse_limits(
        memory="128m", cpu_weight="50", device_write_bps=(f"{path}:2m",),
        device_read_iops=(f"{path}:100",), update=True,
    )  # fmt: skip
    both = merged(old, new)
    assert (both.memory, both.pids_limit, both.cpu_weight) == (128 * MiB, 20, 50)
    assert sorted((i.kind, i.rate) for i in both.io) == [("riops", 100), ("wbps", 2 * MiB)]
    assert merged(old, ContainerLimits()) == old
