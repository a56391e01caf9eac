"""A CgroupSample as a *shape* (its structure) and a list of integers (its figures).

The shape says which fields are None, which limits are ``max``, which keys memory.stat, io.stat
and the pressure files had, and how each float was stored; it changes rarely, so frames.py
interns it and writes it once. The integers change every poll and are delta-coded against the
same cgroup's previous sample. Decoding gives back values equal (==) to the originals: MAX
stays MAX, None stays None, Devices stay Devices.

The field names of every record type are written into the recording's header (``schema``),
so a recording made before a field was added still replays (the new field takes its default).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from monitor.sample import CgroupSample, Limits
from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoMax, IoStat
from runtime.cgroupfs.memory import MemoryEvents
from runtime.cgroupfs.pids import PidsEvents
from runtime.cgroupfs.pressure import Pressure, PressureLine

Shape = tuple[str, ...]
Put = Callable[[Any, list[str], list[int]], None]
Get = Callable[[Iterator[str], Iterator[int]], Any]
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


class CodecError(ValueError):
    """A value the format cannot hold, or a schema this code cannot read."""


def _put_int(v: Any, shape: list[str], nums: list[int]) -> None:
    if v is None:
        shape.append("-")
    elif type(v) is int or type(v) is bool:
        shape.append("i")
        nums.append(int(v))
    else:
        raise CodecError(f"cannot record {v!r}: expected an integer or None")


def _get_int(shape: Iterator[str], nums: Iterator[int]) -> int | None:
    return None if next(shape) == "-" else next(nums)


def _put_int_or_max(v: Any, shape: list[str], nums: list[int]) -> None:
    if v is MAX:
        shape.append("m")
    else:
        _put_int(v, shape, nums)


def _get_int_or_max(shape: Iterator[str], nums: Iterator[int]) -> Any:
    token = next(shape)
    return None if token == "-" else MAX if token == "m" else next(nums)


def _put_bool(v: Any, shape: list[str], nums: list[int]) -> None:
    shape.append("-" if v is None else "b")
    if v is not None:
        nums.append(1 if v else 0)


def _get_bool(shape: Iterator[str], nums: Iterator[int]) -> bool | None:
    return None if next(shape) == "-" else next(nums) == 1


def _put_float(v: Any, shape: list[str], nums: list[int]) -> None:
    """PSI averages have two decimals: stored as hundredths when that is exact, else as
    the IEEE bits (any float comes back identical)."""
    if v is None:
        shape.append("-")
        return
    if math.isfinite(v):
        cents = round(v * 100)
        if cents / 100 == v:
            shape.append("c")
            nums.append(cents)
            return
    shape.append("f")
    nums.append(_U64.unpack(_F64.pack(v))[0])


def _get_float(shape: Iterator[str], nums: Iterator[int]) -> float | None:
    token = next(shape)
    if token == "-":
        return None
    if token == "c":
        return next(nums) / 100
    return float(_F64.unpack(_U64.pack(next(nums)))[0])


class _Record:
    """A frozen dataclass, field by field, in the order its schema lists them."""

    def __init__(self, cls: type, fields: Sequence[str], kinds: Mapping[str, tuple[Put, Get]]):
        self.cls, self.fields = cls, tuple(fields)
        unknown = [f for f in self.fields if f not in kinds]
        if unknown:
            raise CodecError(f"{cls.__name__} has no field {', '.join(unknown)} in this corral")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in self.fields
            and f.name != "path"
        ]
        if required:
            raise CodecError(f"{cls.__name__} lacks the required field {', '.join(required)}")
        self.puts = [(f, kinds[f][0]) for f in self.fields]
        self.gets = [(f, kinds[f][1]) for f in self.fields]

    def put(self, v: Any, shape: list[str], nums: list[int]) -> None:
        if v is None:
            shape.append("-")
            return
        shape.append("o")
        for name, put in self.puts:
            put(getattr(v, name), shape, nums)

    def get(self, shape: Iterator[str], nums: Iterator[int]) -> Any:
        if next(shape) == "-":
            return None
        return self.cls(**self.fields_of(shape, nums))

    def fields_of(self, shape: Iterator[str], nums: Iterator[int]) -> dict[str, Any]:
        return {name: get(shape, nums) for name, get in self.gets}


def _str_key(key: Any) -> str:
    if not isinstance(key, str):
        raise CodecError(f"cannot record mapping key {key!r}: expected a str")
    return key


def _device_key(key: Any) -> str:
    if not isinstance(key, Device):
        raise CodecError(f"cannot record mapping key {key!r}: expected a Device")
    return str(key)


class _Map:
    """A mapping (or None): its keys go into the shape, its values through ``value``."""

    def __init__(
        self, key: Callable[[Any], str], unkey: Callable[[str], Any], value: tuple[Put, Get]
    ):
        self.key, self.unkey = key, unkey
        self.value_put, self.value_get = value

    def put(self, v: Any, shape: list[str], nums: list[int]) -> None:
        if v is None:
            shape.append("-")
            return
        shape.append(f"#{len(v)}")
        shape.extend([self.key(k) for k in v])
        put = self.value_put
        for item in v.values():
            put(item, shape, nums)

    def get(self, shape: Iterator[str], nums: Iterator[int]) -> Any:
        token = next(shape)
        if token == "-":
            return None
        keys = [self.unkey(next(shape)) for _ in range(int(token[1:]))]
        get = self.value_get
        return {k: get(shape, nums) for k in keys}


INT, INT_OR_MAX = (_put_int, _get_int), (_put_int_or_max, _get_int_or_max)
BOOL, FLOAT = (_put_bool, _get_bool), (_put_float, _get_float)
RECORD_TYPES: tuple[type, ...] = (
    CpuStat, CpuMax, MemoryEvents, IoStat, IoMax, PidsEvents,
    PressureLine, Pressure, CgroupEvents, Limits, CgroupSample,
)  # fmt: skip


def current_schema() -> dict[str, list[str]]:
    """Each record type's fields in this corral (CgroupSample without ``path``, the key)."""
    return {
        cls.__name__: [f.name for f in dataclasses.fields(cls) if f.name != "path"]
        for cls in RECORD_TYPES
    }


def _same(cls: type, kind: tuple[Put, Get]) -> dict[str, tuple[Put, Get]]:
    return {f.name: kind for f in dataclasses.fields(cls)}


def _by_device(value: tuple[Put, Get]) -> tuple[Put, Get]:
    m = _Map(_device_key, Device.parse, value)
    return m.put, m.get


def _by_name(value: tuple[Put, Get]) -> tuple[Put, Get]:
    m = _Map(_str_key, str, value)
    return m.put, m.get


class SampleCodec:
    """Flattens CgroupSamples into (shape, integers) and back, under one schema: this
    corral's for writing, the recording header's for reading."""

    def __init__(self, schema: Mapping[str, Sequence[str]] | None = None) -> None:
        self.schema = {k: list(v) for k, v in (schema or current_schema()).items()}
        missing = [c.__name__ for c in RECORD_TYPES if c.__name__ not in self.schema]
        if missing:
            raise CodecError(f"the schema lacks the record types {', '.join(missing)}")
        rec = self._record
        line = rec(PressureLine, {**_same(PressureLine, FLOAT), "total_usec": INT})
        limits = rec(
            Limits,
            {
                **_same(Limits, INT_OR_MAX),
                "cpu_max": rec(CpuMax, {"quota": INT_OR_MAX, "period": INT}),
                "cpu_weight": INT,
                "io_max": _by_device(rec(IoMax, _same(IoMax, INT_OR_MAX))),
            },
        )
        self._sample = _Record(
            CgroupSample,
            self.schema["CgroupSample"],
            {
                **_same(CgroupSample, INT),
                "cpu": rec(CpuStat, _same(CpuStat, INT)),
                "memory_stat": _by_name(INT),
                "memory_events": rec(MemoryEvents, _same(MemoryEvents, INT)),
                "io": _by_device(rec(IoStat, _same(IoStat, INT))),
                "pids_events": rec(PidsEvents, _same(PidsEvents, INT)),
                "pressure": _by_name(rec(Pressure, {"some": line, "full": line})),
                "events": rec(CgroupEvents, _same(CgroupEvents, BOOL)),
                "limits": limits,
            },
        )

    def _record(self, cls: type, kinds: Mapping[str, tuple[Put, Get]]) -> tuple[Put, Get]:
        r = _Record(cls, self.schema[cls.__name__], kinds)
        return r.put, r.get

    def flatten(self, sample: CgroupSample) -> tuple[Shape, list[int]]:
        shape: list[str] = []
        nums: list[int] = []
        for name, put in self._sample.puts:
            put(getattr(sample, name), shape, nums)
        return tuple(shape), nums

    def unflatten(self, path: str, shape: Shape, nums: Sequence[int]) -> CgroupSample:
        shape_it, nums_it = iter(shape), iter(nums)
        try:
            sample = CgroupSample(path, **self._sample.fields_of(shape_it, nums_it))
        except (StopIteration, ValueError, TypeError) as e:
            raise CodecError(f"cgroup {path!r}: its shape does not decode ({e})") from None
        if next(shape_it, None) is not None or next(nums_it, None) is not None:
            raise CodecError(f"cgroup {path!r}: its shape has more fields than it decoded")
        return sample
