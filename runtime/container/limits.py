"""The limit options of ``corral run`` and ``corral update``, parsed and checked as docker does.

Each option is parsed with runtime.cgroupfs.limit_syntax and checked with the controller's own
validator, so a value the kernel would refuse is refused here, before any cgroup exists. Where
docker has a rule, corral follows it and says so:

- ``--memory`` below 6 MiB is refused: moby's linuxMinMemory (6291456 bytes), "Minimum memory
  limit allowed is 6MB"; a container's runtime alone needs about that much.
- ``--memory-swap`` is memory plus swap (docker's MemorySwap), needs ``--memory``, is at least
  ``--memory`` (equal: no swap), and ``-1`` means unlimited swap. The kernel's memory.swap.max
  is the swap alone, so the cgroup gets ``memory-swap - memory``.
- ``--cpus`` runs from 0.01 to the number of CPUs online ("Range of CPUs is from 0.01 to N");
  0 is refused (docker reads it as "no limit", a surprise worth an error).
- ``--cpuset-cpus`` must name CPUs that are online ("Requested CPUs are not available").
- ``--device-{read,write}-{bps,iops}`` take ``DEVICE:RATE``, DEVICE a block device path that
  stat(2) resolves to MAJ:MIN, as docker's blkio options do.
- ``--pids-limit -1`` (or ``max``) is unlimited; 0 is refused (the kernel would then refuse
  every fork, the container's first process included).

Every error is InvalidLimit naming the option, the value given and the allowed form.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from runtime.cgroupfs.cpu import CpuMax, validate_cpu_weight
from runtime.cgroupfs.errors import InvalidLimit, ParseError
from runtime.cgroupfs.formats import MAX, IntOrMax, format_id_list, is_digits, parse_id_list
from runtime.cgroupfs.io import RATE_MAX, Device, device_exists
from runtime.cgroupfs.limit_syntax import (
    format_cpus,
    format_size,
    parse_cpus,
    parse_device,
    parse_size,
)
from runtime.cgroupfs.memory import BYTES_MAX
from runtime.cgroupfs.pids import validate_pids_max

MIN_MEMORY = 6 * 1024 * 1024  # moby daemon: linuxMinMemory
CPU_ONLINE = "/sys/devices/system/cpu/online"

IoKind = Literal["rbps", "wbps", "riops", "wiops"]
IO_OPTIONS: dict[IoKind, str] = {
    "rbps": "--device-read-bps",
    "wbps": "--device-write-bps",
    "riops": "--device-read-iops",
    "wiops": "--device-write-iops",
}
OPTIONS = {
    "memory": "--memory",
    "memory_high": "--memory-high",
    "memory_swap": "--memory-swap",
    "cpus": "--cpus",
    "cpu_weight": "--cpu-weight",
    "cpuset_cpus": "--cpuset-cpus",
    "pids_limit": "--pids-limit",
}

MEMORY_FORM = "a size like 64m, 1.5g or 67108864 (bytes), at least 6m"
HIGH_FORM = "a size like 64m, at least 6m, or 'max'"
SWAP_FORM = "memory plus swap: a size at least --memory (equal: no swap), or -1 (unlimited swap)"
PIDS_FORM = "a process count of at least 1, or -1 (or 'max') for unlimited"
WEIGHT_FORM = "an integer 1..10000 (100 is the default)"
IO_FORM = "DEVICE:RATE with DEVICE a block device path like /dev/sda"
RATE_FORMS = {
    "bps": "RATE bytes per second like 10m or 1048576",
    "iops": "RATE operations per second like 100",
}


@dataclass(frozen=True)
class IoLimit:
    """One ``--device-*`` option: ``rate`` for ``kind`` on ``device`` (``path`` as given)."""

    device: Device
    kind: IoKind
    rate: int
    path: str

    @property
    def option(self) -> str:
        return IO_OPTIONS[self.kind]


@dataclass(frozen=True)
class ContainerLimits:
    """The limits asked for; a field that is None (io: empty) was not asked for."""

    memory: int | None = None  # memory.max, bytes
    memory_high: IntOrMax | None = None  # memory.high
    memory_swap: IntOrMax | None = None  # docker's memory+swap total; MAX = unlimited swap
    cpus: CpuMax | None = None  # cpu.max
    cpu_weight: int | None = None  # cpu.weight
    cpuset_cpus: str | None = None  # cpuset.cpus, normalised ("0-1,3")
    pids_limit: IntOrMax | None = None  # pids.max
    io: tuple[IoLimit, ...] = field(default=())  # io.max, one entry per option given

    def asked(self) -> list[tuple[str, str, str]]:
        """(field, option, value as text) of every limit asked for, in option order."""
        out = []
        for name, option in OPTIONS.items():
            value = getattr(self, name)
            if value is not None:
                out.append((name, option, _text(name, value)))
        out += [("io", i.option, f"{i.path}:{i.rate}") for i in self.io]
        return out


def merged(old: ContainerLimits, new: ContainerLimits) -> ContainerLimits:
    """``old`` with every limit ``new`` asks for put in its place (what `corral update` leaves
    in force): an io limit replaces the one of the same device and kind."""
    changes = {f.name: getattr(new, f.name) for f in fields(new) if f.name != "io"}
    kept = {k: v for k, v in changes.items() if v is not None}
    io = {(i.device, i.kind): i for i in old.io}
    io.update({(i.device, i.kind): i for i in new.io})
    return replace(old, **kept, io=tuple(io.values()))


def _text(name: str, value: Any) -> str:
    if name == "cpus":
        return format_cpus(value)
    if name in ("memory", "memory_high", "memory_swap"):
        return "-1" if name == "memory_swap" and value is MAX else format_size(value)
    return str(value)


def parse_limits(
    *,
    memory: str | None = None,
    memory_high: str | None = None,
    memory_swap: str | None = None,
    cpus: str | None = None,
    cpu_weight: str | int | None = None,
    cpuset_cpus: str | None = None,
    pids_limit: str | int | None = None,
    device_read_bps: Iterable[str] = (),
    device_write_bps: Iterable[str] = (),
    device_read_iops: Iterable[str] = (),
    device_write_iops: Iterable[str] = (),
    update: bool = False,
    cpu_online: str = CPU_ONLINE,
) -> ContainerLimits:
    """The options as typed on the command line -> ContainerLimits; InvalidLimit on any error.

    ``update``: for ``corral update``, where ``--memory-swap`` alone is allowed (the
    container's current memory.max is the memory part; ContainerCgroups.update checks it).
    """
    mem = None if memory is None else _memory(memory)
    io: list[IoLimit] = []
    given = (device_read_bps, device_write_bps, device_read_iops, device_write_iops)
    for kind, values in zip(IO_OPTIONS, given, strict=True):
        io += [_io(kind, v) for v in values]
    _no_duplicate_devices(io)
    return ContainerLimits(
        memory=mem,
        memory_high=None if memory_high is None else _memory_high(memory_high, mem),
        memory_swap=None if memory_swap is None else _memory_swap(memory_swap, mem, update),
        cpus=None if cpus is None else _cpus(cpus, cpu_online),
        cpu_weight=None if cpu_weight is None else _cpu_weight(cpu_weight),
        cpuset_cpus=None if cpuset_cpus is None else _cpuset(cpuset_cpus, cpu_online),
        pids_limit=None if pids_limit is None else _pids(pids_limit),
        io=tuple(io),
    )


def read_online_cpus(path: str = CPU_ONLINE) -> frozenset[int]:
    """/sys/devices/system/cpu/online in the kernel's list format ("0-1")."""
    with open(path, encoding="ascii") as f:
        return parse_id_list(f.read(), path)


def _size(option: str, text: str, allowed: str) -> IntOrMax:
    try:
        return parse_size(text, option)
    except InvalidLimit:
        raise InvalidLimit(option, text, allowed) from None


def _memory(text: str) -> int:
    value = _size("--memory", text, MEMORY_FORM)
    if value is MAX or not MIN_MEMORY <= value <= BYTES_MAX:
        # docker: "Minimum memory limit allowed is 6MB" (6 MiB, moby's linuxMinMemory).
        raise InvalidLimit("--memory", text, MEMORY_FORM + " (docker's minimum, 6291456 bytes)")
    return value


def _memory_high(text: str, memory: int | None) -> IntOrMax:
    value = _size("--memory-high", text, HIGH_FORM)
    if value is not MAX and not MIN_MEMORY <= value <= BYTES_MAX:
        raise InvalidLimit("--memory-high", text, HIGH_FORM + " (as --memory)")
    if memory is not None and value is not MAX and value > memory:
        # memory.max acts first: a memory.high above it never throttles anything.
        raise InvalidLimit("--memory-high", text, f"at most --memory ({format_size(memory)})")
    return value


def _memory_swap(text: str, memory: int | None, update: bool) -> IntOrMax:
    if text.strip() == "-1":
        value: IntOrMax = MAX
    else:
        value = _size("--memory-swap", text, SWAP_FORM)
    if memory is None and not update:
        # docker: "You should always set the Memory limit when using Memoryswap limit".
        raise InvalidLimit("--memory-swap", text, SWAP_FORM + "; it needs --memory")
    if value is not MAX and memory is not None and value < memory:
        # docker: "Minimum memoryswap limit should be larger than memory limit".
        allowed = SWAP_FORM.replace("--memory", f"--memory ({format_size(memory)})")
        raise InvalidLimit("--memory-swap", text, allowed)
    if value is not MAX and value <= 0:
        raise InvalidLimit("--memory-swap", text, SWAP_FORM)
    return value


def _cpus(text: str, cpu_online: str) -> CpuMax:
    n = len(read_online_cpus(cpu_online))
    allowed = (
        f"cores from 0.01 to {n} (this host has {n} CPUs online) like 1.5, "
        "QUOTA/PERIOD in microseconds like 50000/100000, or 'max'"
    )
    try:
        value = parse_cpus(text, "--cpus")
    except InvalidLimit:
        raise InvalidLimit("--cpus", text, allowed) from None
    if value.cores is not None and value.cores > n:
        raise InvalidLimit("--cpus", text, allowed)
    return value


def _cpu_weight(text: str | int) -> int:
    word = str(text).strip()
    if not is_digits(word):
        raise InvalidLimit("--cpu-weight", text, WEIGHT_FORM)
    try:
        return validate_cpu_weight(int(word))
    except InvalidLimit:
        raise InvalidLimit("--cpu-weight", text, WEIGHT_FORM) from None


def _cpuset(text: str, cpu_online: str) -> str:
    online = read_online_cpus(cpu_online)
    have = format_id_list(online)
    allowed = f"CPU numbers like 0-1,3 among the CPUs online here ({have})"
    try:
        cpus = parse_id_list(text, "--cpuset-cpus")
    except ParseError:
        raise InvalidLimit("--cpuset-cpus", text, allowed) from None
    if not cpus or not cpus <= online:
        # docker: "Requested CPUs are not available - requested X, available: Y".
        raise InvalidLimit("--cpuset-cpus", text, allowed)
    return format_id_list(cpus)


def _pids(text: str | int) -> IntOrMax:
    word = str(text).strip()
    if word in ("-1", "max"):
        return MAX
    if not is_digits(word) or int(word) < 1:
        raise InvalidLimit("--pids-limit", text, PIDS_FORM)
    try:
        return validate_pids_max(int(word))
    except InvalidLimit as e:
        raise InvalidLimit("--pids-limit", text, f"{PIDS_FORM} ({e.allowed})") from None


def _io(kind: IoKind, text: str) -> IoLimit:
    option = IO_OPTIONS[kind]
    unit = "bps" if kind.endswith("bps") else "iops"
    form = f"{IO_FORM} and {RATE_FORMS[unit]}"
    path, sep, raw = str(text).rpartition(":")
    if not sep or not path.startswith("/") or not raw:
        raise InvalidLimit(option, text, form)
    device = resolve_block_device(option, text, path, form)
    rate = _rate(raw, unit)
    if rate is None:
        raise InvalidLimit(option, text, form + ", at least 1")
    return IoLimit(device, kind, rate, path)


def resolve_block_device(option: str, text: str, path: str, form: str = IO_FORM) -> Device:
    """stat(2) of ``path``: its st_rdev as MAJ:MIN when it is a block device this kernel has
    (/sys/dev/block/MAJ:MIN); else InvalidLimit naming the path."""
    try:
        device = parse_device(path)
    except InvalidLimit as e:
        raise InvalidLimit(option, text, f"{path}: {e.allowed}; expected {form}") from None
    if not device_exists(device):
        why = f"{path} is device {device}, which this kernel does not have (/sys/dev/block)"
        raise InvalidLimit(option, text, why)
    return device


def _rate(raw: str, unit: str) -> int | None:
    if unit == "bps":
        try:
            value = parse_size(raw)
        except InvalidLimit:
            return None
    else:
        value = int(raw) if is_digits(raw) else 0
    return value if value is not MAX and 1 <= value <= RATE_MAX else None


def _no_duplicate_devices(io: list[IoLimit]) -> None:
    seen: set[tuple[Device, str]] = set()
    for limit in io:
        if (limit.device, limit.kind) in seen:
            why = f"{limit.path} ({limit.device}) given twice; give each device once"
            raise InvalidLimit(limit.option, f"{limit.path}:{limit.rate}", why)
        seen.add((limit.device, limit.kind))


# -- config.json -------------------------------------------------------------------------------


def limits_to_dict(limits: ContainerLimits) -> dict[str, Any]:
    """JSON-ready: sizes and counts as integers, unlimited as "max", cpus as quota/period."""
    cpus = limits.cpus
    return {
        "memory": limits.memory,
        "memory_high": _json(limits.memory_high),
        "memory_swap": _json(limits.memory_swap),
        "cpus": None if cpus is None else {"quota": _json(cpus.quota), "period": cpus.period},
        "cpu_weight": limits.cpu_weight,
        "cpuset_cpus": limits.cpuset_cpus,
        "pids_limit": _json(limits.pids_limit),
        "io": [
            {"path": i.path, "device": str(i.device), "kind": i.kind, "rate": i.rate}
            for i in limits.io
        ],
    }


def _json(value: IntOrMax | None) -> int | str | None:
    return "max" if value is MAX else value


def limits_from_dict(data: dict[str, Any]) -> ContainerLimits:
    """The inverse of limits_to_dict; InvalidLimit naming the key of a malformed entry."""
    return ContainerLimits(
        memory=_int(data, "memory"),
        memory_high=_int_or_max(data, "memory_high"),
        memory_swap=_int_or_max(data, "memory_swap"),
        cpus=_cpus_from(data.get("cpus")),
        cpu_weight=_int(data, "cpu_weight"),
        cpuset_cpus=_cpuset_from(data.get("cpuset_cpus")),
        pids_limit=_int_or_max(data, "pids_limit"),
        io=tuple(_io_from(entry) for entry in data.get("io") or ()),
    )


def _int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidLimit(f"limits.{key}", value, "an integer")


def _int_or_max(data: dict[str, Any], key: str) -> IntOrMax | None:
    return MAX if data.get(key) == "max" else _int(data, key)


def _cpus_from(value: object) -> CpuMax | None:
    if value is None:
        return None
    if isinstance(value, dict):
        quota, period = _int_or_max(value, "quota"), _int(value, "period")
        if quota is not None and period is not None:
            return CpuMax(quota, period)
    raise InvalidLimit("limits.cpus", value, "{'quota': N or 'max', 'period': N}")


def _cpuset_from(value: object) -> str | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return format_id_list(parse_id_list(value, "limits.cpuset_cpus"))
    except ParseError:
        pass
    raise InvalidLimit("limits.cpuset_cpus", value, "a CPU list like '0-1,3'")


def _io_from(entry: object) -> IoLimit:
    form = "{'path': '/dev/X', 'device': 'MAJ:MIN', 'kind': 'rbps|wbps|riops|wiops', 'rate': N}"
    if not isinstance(entry, dict) or entry.get("kind") not in IO_OPTIONS:
        raise InvalidLimit("limits.io", entry, form)
    rate, path = entry.get("rate"), entry.get("path")
    if not isinstance(rate, int) or isinstance(rate, bool) or not isinstance(path, str):
        raise InvalidLimit("limits.io", entry, form)
    try:
        device = Device.parse(str(entry.get("device")), "limits.io device")
    except ParseError:
        raise InvalidLimit("limits.io", entry, form) from None
    return IoLimit(device, entry["kind"], rate, path)
