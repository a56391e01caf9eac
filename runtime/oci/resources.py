"""linux.resources of config.json -> ContainerLimits, plus the cgroup v2 files ContainerLimits
has no field for, plus linux.resources.unified verbatim (runtime-spec config-linux.md
"Control groups"; the conversions are crun 1.8's src/libcrun/cgroup-resources.c and runc
1.1's libcontainer/cgroups/fs2, which agree):

- memory.limit -> memory.max (-1: "max"); reservation -> memory.low (-1: "max"); swap is
  memory+swap, so memory.swap.max = swap - limit (swap >= limit, needs a limit), swap 0 ->
  memory.swap.max 0 (crun), -1 -> "max". kernel, kernelTCP, swappiness, disableOOMKiller,
  useHierarchy have no cgroup v2 file and are refused (as crun does on cgroup v2).
- cpu.quota/period -> cpu.max "QUOTA PERIOD" (period defaults to 100000, quota <= 0 with a
  period: "max PERIOD"); shares -> cpu.weight = 1 + (shares - 2) * 9999 / 262142 (integer
  division: 2..262144 onto 1..10000); cpus -> cpuset.cpus, mems -> cpuset.mems.
  realtimeRuntime/realtimePeriod (no v2 file), burst and idle are refused.
- pids.limit -> pids.max (-1: "max"); 0 is refused: runc and crun read it as "not set".
- blockIO.weight (10..1000) -> io.weight = 1 + (weight - 10) * 9999 / 990 (runc and crun
  write io.bfq.weight with the raw weight instead when the BFQ scheduler provides it);
  throttle{Read,Write}{Bps,Iops}Device -> io.max "MAJ:MIN rbps=N" ... ; leafWeight and
  weightDevice (BFQ-only) are refused.
- unified: written verbatim after everything else; keys are "controller.file" names
  without '/', values strings.
- devices: only deny-all entries (see linux.py); hugepageLimits, network, rdma refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.errors import ParseError
from runtime.cgroupfs.formats import MAX, IntOrMax, format_id_list, parse_id_list
from runtime.cgroupfs.io import RATE_MAX, Device
from runtime.container.limits import ContainerLimits, IoKind, IoLimit
from runtime.oci.fields import (
    INT64_MAX,
    MISSING,
    OciConfigError,
    array,
    check_keys,
    integer,
    join,
    obj,
    string,
    string_map,
)
from runtime.oci.linux import check_devices

WHERE = "linux.resources"
_V2 = "has no cgroup v2 file; corral uses cgroup v2 only"
REFUSED = {
    "hugepageLimits": "hugetlb limits are not supported by corral",
    "network": f"net_cls/net_prio {_V2}",
    "rdma": "rdma limits are not supported by corral",
}
MEMORY_REFUSED = {k: _V2 for k in ("kernel", "kernelTCP", "swappiness", "disableOOMKiller",
                                   "useHierarchy")} | {
    "checkBeforeUpdate": "is for updates; corral oci has no update"}  # fmt: skip
CPU_REFUSED = {k: _V2 for k in ("realtimeRuntime", "realtimePeriod")} | {
    "burst": "cpu.max.burst is not supported by corral",
    "idle": "cpu.idle is not supported by corral"}  # fmt: skip
BLKIO_REFUSED = {
    "leafWeight": _V2,
    "weightDevice": "per-device weights need the BFQ scheduler; not supported by corral",
}
THROTTLES: dict[str, IoKind] = {
    "throttleReadBpsDevice": "rbps", "throttleWriteBpsDevice": "wbps",
    "throttleReadIOPSDevice": "riops", "throttleWriteIOPSDevice": "wiops",
}  # fmt: skip
_UNIFIED_KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")
CPU_PERIOD = (1000, 1_000_000)  # microseconds, the kernel's bounds for cpu.max's period
CPU_QUOTA_MIN = 1000


@dataclass(frozen=True)
class OciResources:
    limits: ContainerLimits = field(default_factory=ContainerLimits)
    files: dict[str, str] = field(default_factory=dict)  # cgroup file -> value (no field)
    unified: dict[str, str] = field(default_factory=dict)


def parse_resources(value: object) -> OciResources:
    data = obj(value, WHERE)
    supported = ("memory", "cpu", "pids", "blockIO", "unified", "devices")
    check_keys(data, WHERE, supported, REFUSED)
    check_devices(data.get("devices", []), join(WHERE, "devices"))
    files: dict[str, str] = {}
    limits: dict[str, Any] = {}
    if data.get("memory") is not None:
        _memory(obj(data["memory"], join(WHERE, "memory")), limits, files)
    if data.get("cpu") is not None:
        _cpu(obj(data["cpu"], join(WHERE, "cpu")), limits, files)
    if data.get("pids") is not None:
        limits["pids_limit"] = _pids(data["pids"])
    if data.get("blockIO") is not None:
        limits["io"] = _block_io(obj(data["blockIO"], join(WHERE, "blockIO")), files)
    unified = _unified(data.get("unified", {}))
    return OciResources(ContainerLimits(**limits), files, unified)


def _max_or(value: int) -> str:
    return "max" if value == -1 else str(value)


def _memory(data: dict[str, Any], limits: dict[str, Any], files: dict[str, str]) -> None:
    where = join(WHERE, "memory")
    check_keys(data, where, ("limit", "reservation", "swap"), MEMORY_REFUSED)
    sizes = "bytes 1..9223372036854775807, or -1 for no limit"
    limit = None
    if "limit" in data:
        limit = integer(data["limit"], join(where, "limit"), -1, INT64_MAX, sizes)
        if limit == 0:
            raise OciConfigError(join(where, "limit"), 0, f"0 would leave no memory; {sizes}")
        if limit == -1:
            files["memory.max"] = "max"
            limit = None
        else:
            limits["memory"] = limit
    if "reservation" in data:
        low = integer(
            data["reservation"],
            join(where, "reservation"),
            -1,
            INT64_MAX,
            "bytes 0..9223372036854775807, or -1 (max)",
        )
        files["memory.low"] = _max_or(low)
    if "swap" in data:
        _swap(data["swap"], limit, join(where, "swap"), limits, files)


def _swap(
    value: object, limit: int | None, where: str, limits: dict[str, Any], files: dict[str, str]
) -> None:
    allowed = "memory+swap bytes at least memory.limit, 0 for no swap, or -1 for unlimited swap"
    swap = integer(value, where, -1, INT64_MAX, allowed)
    if swap > 0 and limit is None:
        # crun: "cannot set swap limit without the memory limit"
        raise OciConfigError(where, swap, f"needs linux.resources.memory.limit; {allowed}")
    if swap > 0 and limit is not None and swap < limit:
        raise OciConfigError(
            where, swap, f"is memory+swap, so at least memory.limit ({limit}); {allowed}"
        )
    if swap > 0 or (swap == -1 and limit is not None):
        limits["memory_swap"] = MAX if swap == -1 else swap
    elif swap == 0 and limit is not None:
        limits["memory_swap"] = limit  # memory+swap == memory: memory.swap.max 0
    else:
        files["memory.swap.max"] = _max_or(swap)


def _cpu(data: dict[str, Any], limits: dict[str, Any], files: dict[str, str]) -> None:
    where = join(WHERE, "cpu")
    check_keys(data, where, ("shares", "quota", "period", "cpus", "mems"), CPU_REFUSED)
    if "shares" in data:
        shares = integer(data["shares"], join(where, "shares"), 2, 262144)
        limits["cpu_weight"] = shares_to_weight(shares)
    quota: IntOrMax = MAX
    if "quota" in data:
        q = integer(
            data["quota"],
            join(where, "quota"),
            -1,
            INT64_MAX,
            f"microseconds {CPU_QUOTA_MIN}..{INT64_MAX}, or -1 for no limit",
        )
        if 0 <= q < CPU_QUOTA_MIN:
            raise OciConfigError(
                join(where, "quota"),
                q,
                f"microseconds at least {CPU_QUOTA_MIN} (the kernel's minimum), or -1 for no limit",
            )
        quota = MAX if q == -1 else q
    period = None
    if "period" in data:
        lo, hi = CPU_PERIOD
        period = integer(data["period"], join(where, "period"), lo, hi, f"microseconds {lo}..{hi}")
    if quota is not MAX or period is not None:
        limits["cpus"] = CpuMax(quota, period or 100000)
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if key in data:
            ids = _id_list(data[key], join(where, key))
            if key == "cpus":
                limits["cpuset_cpus"] = ids
            else:
                files[name] = ids


def _id_list(value: object, where: str) -> str:
    text = string(value, where, empty=False)
    try:
        ids = parse_id_list(text, where)
    except ParseError:
        ids = frozenset()
    if not ids:
        raise OciConfigError(where, text, "a list like 0-3,5 (the kernel's list format)")
    return format_id_list(ids)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares 2..262144 -> cgroup v2 cpu.weight 1..10000, linearly (crun 1.8's
    convert_shares_to_weight, runc 1.1's ConvertCPUSharesToCgroupV2Value)."""
    return 1 + (shares - 2) * 9999 // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight 10..1000 -> io.weight 1..10000, linearly (crun, runc)."""
    return 1 + (weight - 10) * 9999 // 990


def _pids(value: object) -> IntOrMax:
    where = join(WHERE, "pids")
    data = obj(value, where)
    check_keys(data, where, ("limit",), {})
    allowed = "a process count 1..9223372036854775807, or -1 for no limit"
    limit = integer(data.get("limit", MISSING), join(where, "limit"), -1, INT64_MAX, allowed)
    if limit == 0:
        raise OciConfigError(
            join(where, "limit"), 0, f"runc and crun read 0 as 'not set'; {allowed}"
        )
    return MAX if limit == -1 else limit


def _block_io(data: dict[str, Any], files: dict[str, str]) -> tuple[IoLimit, ...]:
    where = join(WHERE, "blockIO")
    check_keys(data, where, ("weight", *THROTTLES), BLKIO_REFUSED)
    if "weight" in data:
        weight = integer(data["weight"], join(where, "weight"), 10, 1000)
        files["io.weight"] = str(blkio_weight_to_io_weight(weight))
    out: list[IoLimit] = []
    for key, kind in THROTTLES.items():
        path = join(where, key)
        for i, item in enumerate(array(data.get(key, []), path)):
            out.append(_throttle(item, join(path, i), kind, out))
    return tuple(out)


def _throttle(value: object, where: str, kind: IoKind, earlier: list[IoLimit]) -> IoLimit:
    data = obj(value, where)
    check_keys(data, where, ("major", "minor", "rate"), {})
    major = integer(data.get("major", MISSING), join(where, "major"), 0, 2**12 - 1)
    minor = integer(data.get("minor", MISSING), join(where, "minor"), 0, 2**20 - 1)
    rate = integer(data.get("rate", MISSING), join(where, "rate"), 1, RATE_MAX)
    device = Device(major, minor)
    if any(limit.device == device and limit.kind == kind for limit in earlier):
        raise OciConfigError(where, data, f"device {device} already has a {kind} limit")
    return IoLimit(device, kind, rate, str(device))


def _unified(value: object) -> dict[str, str]:
    where = join(WHERE, "unified")
    out = string_map(value, where)
    for key in out:
        if "/" in key or not _UNIFIED_KEY.fullmatch(key):
            raise OciConfigError(
                join(where, key),
                key,
                "a cgroup v2 file name like memory.high (controller.file, no '/')",
            )
    return out
