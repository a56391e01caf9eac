"""linux.resources -> ContainerLimits + cgroup v2 files + unified, with crun's and runc's
conversions, and every refusal with its exact message."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device
from runtime.container.limits import ContainerLimits, IoLimit
from runtime.oci.config import OciConfig, parse_config
from runtime.oci.resources import blkio_weight_to_io_weight, shares_to_weight
from tests.unit.test_oci_config import BUNDLE, refused, with_

I64 = 9223372036854775807


def resources(value: dict[str, Any]) -> OciConfig:
    return parse_config(with_("linux.resources", value), BUNDLE)


def refused_resources(value: dict[str, Any], message: str) -> None:
    refused(with_("linux.resources", value), "config.json: linux.resources." + message)


def test_memory() -> None:
    c = resources({"memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728}})
    assert c.limits == ContainerLimits(memory=67108864, memory_swap=134217728)
    assert dict(c.resource_files) == {"memory.low": "33554432"}
    c = resources({"memory": {"limit": 67108864, "swap": 0}})
    assert c.limits.memory_swap == 67108864  # memory+swap == memory: memory.swap.max 0
    c = resources({"memory": {"limit": 67108864, "swap": -1, "reservation": -1}})
    assert c.limits.memory_swap is MAX and c.resource_files["memory.low"] == "max"
    c = resources({"memory": {"limit": -1, "swap": -1}})
    assert c.limits == ContainerLimits()
    assert dict(c.resource_files) == {"memory.max": "max", "memory.swap.max": "max"}
    c = resources({"memory": {"swap": 0}})
    assert dict(c.resource_files) == {"memory.swap.max": "0"}


def test_memory_refusals() -> None:
    sizes = "bytes 1..9223372036854775807, or -1 for no limit"
    swap = "memory+swap bytes at least memory.limit, 0 for no swap, or -1 for unlimited swap"
    refused_resources(
        {"memory": {"limit": 0}}, f"memory.limit: 0: 0 would leave no memory; {sizes}"
    )
    refused_resources(
        {"memory": {"limit": 2**63}},
        f"memory.limit: 9223372036854775808: out of range: allowed {sizes}",
    )
    refused_resources({"memory": {"limit": -2}}, f"memory.limit: -2: out of range: allowed {sizes}")
    refused_resources(
        {"memory": {"limit": "64m"}}, f"memory.limit: '64m': must be {sizes}, not string"
    )
    refused_resources(
        {"memory": {"swap": 100}}, f"memory.swap: 100: needs linux.resources.memory.limit; {swap}"
    )
    refused_resources(
        {"memory": {"limit": 200, "swap": 100}},
        f"memory.swap: 100: is memory+swap, so at least memory.limit (200); {swap}",
    )
    for field in ("kernel", "kernelTCP", "swappiness", "useHierarchy"):
        refused_resources(
            {"memory": {field: 5}},
            f"memory.{field}: 5: has no cgroup v2 file; corral uses cgroup v2 only",
        )
    refused_resources(
        {"memory": {"disableOOMKiller": True}},
        "memory.disableOOMKiller: true: has no cgroup v2 file; corral uses cgroup v2 only",
    )
    refused_resources({"memory": []}, "memory: []: must be an object, not array")


def test_cpu() -> None:
    c = resources(
        {"cpu": {"shares": 1024, "quota": 50000, "period": 200000, "cpus": "1,0,2-3", "mems": "0"}}
    )
    assert c.limits == ContainerLimits(cpus=CpuMax(50000, 200000), cpu_weight=39, cpuset_cpus="0-3")
    assert dict(c.resource_files) == {"cpuset.mems": "0"}
    assert resources({"cpu": {"quota": 150000}}).limits.cpus == CpuMax(150000, 100000)
    assert resources({"cpu": {"period": 50000}}).limits.cpus == CpuMax(MAX, 50000)
    assert resources({"cpu": {"quota": -1}}).limits.cpus is None


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (512, 20)])
def test_shares_to_weight_as_crun(shares: int, weight: int) -> None:
    # crun 1.8 convert_shares_to_weight: 1 + ((shares - 2) * 9999) / 262142 (C division)
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize(("blkio", "io"), [(10, 1), (500, 4950), (1000, 10000), (100, 910)])
def test_blkio_weight_as_crun(blkio: int, io: int) -> None:
    assert blkio_weight_to_io_weight(blkio) == io


def test_cpu_refusals() -> None:
    refused_resources(
        {"cpu": {"shares": 1}}, "cpu.shares: 1: out of range: allowed an integer 2..262144"
    )
    refused_resources(
        {"cpu": {"shares": 2**64}},
        "cpu.shares: 18446744073709551616: out of range: allowed an integer 2..262144",
    )
    refused_resources(
        {"cpu": {"quota": 999}},
        "cpu.quota: 999: microseconds at least 1000 (the kernel's minimum), or -1 for no limit",
    )
    refused_resources(
        {"cpu": {"period": 999}},
        "cpu.period: 999: out of range: allowed microseconds 1000..1000000",
    )
    refused_resources(
        {"cpu": {"cpus": "0-x"}}, "cpu.cpus: '0-x': a list like 0-3,5 (the kernel's list format)"
    )
    refused_resources({"cpu": {"mems": ""}}, "cpu.mems: '': must not be empty")
    refused_resources(
        {"cpu": {"realtimeRuntime": 950000}},
        "cpu.realtimeRuntime: 950000: has no cgroup v2 file; corral uses cgroup v2 only",
    )
    refused_resources({"cpu": {"idle": 1}}, "cpu.idle: 1: cpu.idle is not supported by corral")


def test_pids() -> None:
    assert resources({"pids": {"limit": 100}}).limits.pids_limit == 100
    assert resources({"pids": {"limit": -1}}).limits.pids_limit is MAX
    allowed = "a process count 1..9223372036854775807, or -1 for no limit"
    refused_resources(
        {"pids": {"limit": 0}}, f"pids.limit: 0: runc and crun read 0 as 'not set'; {allowed}"
    )
    refused_resources(
        {"pids": {"limit": 2**64}},
        f"pids.limit: 18446744073709551616: out of range: allowed {allowed}",
    )
    refused_resources({"pids": {}}, f"pids.limit: missing: required: {allowed}")


def test_block_io() -> None:
    c = resources(
        {
            "blockIO": {
                "weight": 500,
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [
                    {"major": 8, "minor": 0, "rate": 100},
                    {"major": 253, "minor": 1, "rate": 5},
                ],
            }
        }
    )
    assert c.limits.io == (
        IoLimit(Device(8, 0), "rbps", 1048576, "8:0"),
        IoLimit(Device(8, 0), "wiops", 100, "8:0"),
        IoLimit(Device(253, 1), "wiops", 5, "253:1"),
    )
    assert dict(c.resource_files) == {"io.weight": "4950"}


def test_block_io_refusals() -> None:
    refused_resources(
        {"blockIO": {"weight": 5}}, "blockIO.weight: 5: out of range: allowed an integer 10..1000"
    )
    dup = {"major": 8, "minor": 0, "rate": 1}
    refused_resources(
        {"blockIO": {"throttleReadBpsDevice": [dup, dup]}},
        'blockIO.throttleReadBpsDevice[1]: {"major": 8, "minor": 0, "rate": 1}: '
        "device 8:0 already has a rbps limit",
    )
    refused_resources(
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 2**64}]}},
        "blockIO.throttleReadBpsDevice[0].rate: 18446744073709551616: out of "
        "range: allowed an integer 1..18446744073709551615",
    )
    refused_resources(
        {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 0}]}},
        "blockIO.throttleReadBpsDevice[0].rate: 0: out of range: allowed an "
        "integer 1..18446744073709551615",
    )
    refused_resources(
        {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 10}]}},
        'blockIO.weightDevice: [{"major": 8, "minor": 0, "weight": 10}]: '
        "per-device weights need the BFQ scheduler; not supported by corral",
    )
    refused_resources(
        {"blockIO": {"leafWeight": 10}},
        "blockIO.leafWeight: 10: has no cgroup v2 file; corral uses cgroup v2 only",
    )


def test_unified() -> None:
    c = resources(
        {"unified": {"memory.high": "50000000", "io.max": "8:0 rbps=1\n", "cgroup.max.depth": "3"}}
    )
    assert dict(c.unified) == {
        "memory.high": "50000000",
        "io.max": "8:0 rbps=1\n",
        "cgroup.max.depth": "3",
    }
    form = "a cgroup v2 file name like memory.high (controller.file, no '/')"
    refused_resources(
        {"unified": {"../memory.max": "1"}}, f"unified[\"../memory.max\"]: '../memory.max': {form}"
    )
    refused_resources(
        {"unified": {"memory/max": "1"}}, f"unified[\"memory/max\"]: 'memory/max': {form}"
    )
    refused_resources({"unified": {"memorymax": "1"}}, f"unified.memorymax: 'memorymax': {form}")
    refused_resources(
        {"unified": {"memory.max": 1}}, 'unified["memory.max"]: 1: must be a string, not number'
    )


def test_other_resources_refused() -> None:
    refused_resources(
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]},
        'hugepageLimits: [{"limit": 1, "pageSize": "2MB"}]: hugetlb limits are '
        "not supported by corral",
    )
    refused_resources(
        {"network": {"classID": 1}},
        'network: {"classID": 1}: net_cls/net_prio '
        "has no cgroup v2 file; corral uses cgroup v2 only",
    )
    refused_resources(
        {"cpus": 1},
        "cpus: 1: unknown field; linux.resources allows blockIO, "
        "cpu, devices, memory, pids, unified",
    )
