"""Raw samples: what the kernel's files said at one instant, typed, nothing derived.

A ``HostSample`` is what one poll read; recordings store these (models are recomputed on
replay, so a recording can be re-simulated under any policy). Every field is None where this
kernel or this cgroup lacks the file (a controller not enabled, an older kernel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime.cgroupfs.core import CgroupEvents
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import IntOrMax
from runtime.cgroupfs.io import Device, IoMax, IoStat
from runtime.cgroupfs.memory import MemoryEvents
from runtime.cgroupfs.pids import PidsEvents
from runtime.cgroupfs.pressure import Pressure


@dataclass(frozen=True, slots=True)
class Limits:
    """The limit files as read: cpu.max, cpu.weight, memory.{min,low,high,max},
    memory.swap.max, io.max, pids.max. MAX is a typed value, never -1 or 0."""

    cpu_max: CpuMax | None = None
    cpu_weight: int | None = None
    memory_min: IntOrMax | None = None
    memory_low: IntOrMax | None = None
    memory_high: IntOrMax | None = None
    memory_max: IntOrMax | None = None
    swap_max: IntOrMax | None = None
    io_max: Mapping[Device, IoMax] | None = None
    pids_max: IntOrMax | None = None


@dataclass(frozen=True, slots=True)
class CgroupSample:
    """One cgroup at one instant. ``path`` is relative to the cgroup2 root ("" = root)."""

    path: str
    cpu: CpuStat | None = None
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_stat: Mapping[str, int] | None = None
    memory_events: MemoryEvents | None = None
    swap_current: int | None = None
    io: Mapping[Device, IoStat] | None = None
    pids_current: int | None = None
    pids_events: PidsEvents | None = None
    pressure: Mapping[str, Pressure] = field(default_factory=dict)  # "cpu"/"memory"/"io"
    events: CgroupEvents | None = None
    nr_procs: int | None = None  # processes directly in this cgroup (cgroup.procs)
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class HostSample:
    """Everything one poll read. ``monotonic`` (CLOCK_MONOTONIC, s) times the rates;
    ``wall_time`` (Unix s) dates the sample. ``errors`` counts failures by kind."""

    wall_time: float
    monotonic: float
    cgroups: Mapping[str, CgroupSample]
    errors: Mapping[str, int] = field(default_factory=dict)
