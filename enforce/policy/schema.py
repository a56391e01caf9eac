"""The policy language: typed, frozen pydantic models of a TOML policy file.

A policy is an ``[enforcer]`` table (EnforcerSettings) and ``[[rule]]`` tables, in file order.
Each rule selects cgroups and enables controllers, each with its own params model. Sizes are
the shared limit syntax ("512M", "max"; runtime.cgroupfs.limit_syntax), CPU limits are cores
("0.5", "2") and durations are "6s", "10ms", "2m" or plain seconds. Unknown keys are refused
everywhere (extra="forbid"), so a typo never silently disables a safeguard.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from enforce.actions import IoLimit, Mode
from runtime.cgroupfs.cpu import WEIGHT_MAX, WEIGHT_MIN, CpuMax
from runtime.cgroupfs.errors import InvalidLimit
from runtime.cgroupfs.formats import MAX, IntOrMax
from runtime.cgroupfs.limit_syntax import SIZE_FORMS, parse_cpus, parse_io_limit, parse_size
from runtime.cgroupfs.pids import PIDS_LIMIT

MiB = 1 << 20
GiB = 1 << 30

DURATION_FORMS = "a duration like 6s, 10ms, 2m, 1h or a number of seconds"
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: object) -> float:
    """Seconds from "6s"/"10ms"/"2m"/6. The CLI's parser (corral.cli.durations) raises
    click errors and lives above enforce/, so the same grammar is matched here."""
    if isinstance(value, bool):
        raise ValueError(f"allowed: {DURATION_FORMS}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"allowed: {DURATION_FORMS}")
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    if not seconds >= 0:
        raise ValueError(f"allowed: {DURATION_FORMS}, not negative")
    return seconds


def _size(value: object) -> int:
    """Bytes from "512M" or an integer; 'max' is not a size here (a bound must be finite)."""
    if isinstance(value, bool):
        raise ValueError(f"allowed: {SIZE_FORMS} (finite)")
    try:
        size = parse_size(str(value))
    except InvalidLimit:
        raise ValueError(f"allowed: {SIZE_FORMS} (finite)") from None
    if size is MAX:
        raise ValueError("allowed: a finite size here ('max' has no meaning as a bound)")
    return size


def _size_or_max(value: object) -> IntOrMax:
    if isinstance(value, bool):
        raise ValueError(f"allowed: {SIZE_FORMS}")
    try:
        return parse_size(str(value))
    except InvalidLimit:
        raise ValueError(f"allowed: {SIZE_FORMS}") from None


def _cores(value: object) -> float:
    """Cores from "0.5", 2 or "50000/100000" (runtime's CPU syntax); finite only."""
    if isinstance(value, bool):
        raise ValueError("allowed: cores like 0.5 or 2")
    try:
        cpu = parse_cpus(str(value))
    except InvalidLimit as e:
        raise ValueError(f"allowed: {e.allowed}") from None
    if cpu.cores is None:
        raise ValueError("allowed: a finite number of cores here ('max' is not a bound)")
    return cpu.cores


def _cpu_max(value: object) -> CpuMax:
    if isinstance(value, CpuMax):
        return value
    try:
        return parse_cpus(str(value))
    except InvalidLimit as e:
        raise ValueError(f"allowed: {e.allowed}") from None


def _pids(value: object) -> IntOrMax:
    if value == "max" or value is MAX:
        return MAX
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= PIDS_LIMIT:
        raise ValueError(f"allowed: a count 0..{PIDS_LIMIT} or 'max'")
    return value


def _io_limits(value: object) -> tuple[IoLimit, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("allowed: a list of 'DEVICE KEY=VALUE ...' strings")
    out = []
    for item in items:
        if isinstance(item, IoLimit):
            out.append(item)
            continue
        try:
            device, limit = parse_io_limit(str(item))
        except InvalidLimit as e:
            raise ValueError(f"allowed: {e.allowed}") from None
        out.append(IoLimit(device, limit))
    return tuple(out)


Size = Annotated[int, BeforeValidator(_size)]
SizeOrMax = Annotated[IntOrMax, BeforeValidator(_size_or_max)]
Duration = Annotated[float, BeforeValidator(_duration)]
Cores = Annotated[float, BeforeValidator(_cores)]
CpuLimit = Annotated[CpuMax, BeforeValidator(_cpu_max)]
PidsLimit = Annotated[IntOrMax, BeforeValidator(_pids)]
IoLimits = Annotated[tuple[IoLimit, ...], BeforeValidator(_io_limits)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def _glob(value: str) -> str:
    if not value or "\0" in value:
        raise ValueError("allowed: a non-empty glob like 'web*' or 'corral/*'")
    return value


Glob = Annotated[str, AfterValidator(_glob)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _ordered(model: BaseModel, low: str, high: str) -> None:
    lo, hi = getattr(model, low), getattr(model, high)
    if lo is not None and hi is not None and lo is not MAX and hi is not MAX and lo > hi:
        raise ValueError(f"{low} {lo!r} is above {high} {hi!r}: allowed {low} <= {high}")


class EnforcerSettings(_Model):
    """[enforcer]: what applies to every rule."""

    managed_root: str = "corral"  # only cgroups under it are ever written ("" = whole tree)
    tick_seconds: Duration = Field(default=1.0, gt=0, le=60)
    max_writes_per_second: float = Field(default=20.0, gt=0)
    memory_max_margin_bytes: Size = 64 * MiB  # memory.max never below memory.current + this
    on_exit: Literal["leave", "restore"] = "leave"
    audit_log: str = "/var/log/corral/audit.jsonl"


class Selector(_Model):
    """Which cgroups a rule governs: every given criterion must match (none = all cgroups
    under the managed root). ``name`` globs the container/unit name, ``cgroup`` the path."""

    name: Glob | None = None
    kind: (
        Literal[
            "container", "service", "scope", "slice", "docker", "podman", "kubernetes", "cgroup"
        ]
        | None
    ) = None
    labels: dict[str, str] = Field(default_factory=dict)
    cgroup: Glob | None = None


class LimitsParams(_Model):
    """Static limits, re-applied whenever something else changes them (drift is logged)."""

    memory_max: SizeOrMax | None = None
    memory_high: SizeOrMax | None = None
    memory_low: SizeOrMax | None = None
    memory_min: SizeOrMax | None = None
    cpu_max: CpuLimit | None = None
    cpu_weight: int | None = Field(default=None, ge=WEIGHT_MIN, le=WEIGHT_MAX)
    io_max: IoLimits | None = None
    pids_max: PidsLimit | None = None

    @model_validator(mode="after")
    def _check(self) -> LimitsParams:
        _ordered(self, "memory_min", "memory_low")
        _ordered(self, "memory_low", "memory_high")
        _ordered(self, "memory_high", "memory_max")
        if all(getattr(self, f) is None for f in type(self).model_fields):
            raise ValueError("no limit given: allowed keys " + ", ".join(type(self).model_fields))
        return self


class MemoryPressureParams(_Model):
    """senpai: memory.high follows the workload so that memory PSI ``some`` stays near
    ``pressure`` per ``interval``. Defaults are senpai.py's."""

    interval: Duration = Field(default=6.0, gt=0)  # quiet time before a probe
    pressure: Duration = Field(default=0.010, gt=0)  # target stall (some) since the last change
    max_probe: float = Field(default=0.01, gt=0, le=1)  # largest squeeze, fraction of the limit
    max_backoff: float = Field(default=1.0, gt=0, le=10)  # largest loosening, fraction
    coeff_probe: float = Field(default=10.0, gt=0)
    coeff_backoff: float = Field(default=20.0, gt=0)
    min: Size = 100 * MiB  # added to the unreclaimable floor (anon + kernel memory)
    max: Size = 100 * GiB
    trigger_window: Duration = Field(default=1.0, ge=0.5, le=10.0)  # PSI trigger window
    # Not senpai's: when set, memory.max is raised (never lowered) to keep this fraction of
    # headroom above memory.high, so growth meets throttling rather than the OOM killer.
    memory_max_headroom: float | None = Field(default=None, gt=0, le=10)
    # Not senpai's, each off by default (see enforce.controllers.memory_pressure):
    # dead band: probes smaller than this fraction of memory.high accumulate until they reach
    # it, and a back-off is at least this (fewer, larger writes).
    min_step: Fraction = 0.0
    # adaptive interval: after a back-off that a probe caused, the quiet interval is
    # multiplied by this (up to max_interval; None: 8 x interval) ...
    interval_growth: float = Field(default=1.0, ge=1.0, le=10.0)
    max_interval: Duration | None = Field(default=None, gt=0)
    # ... and returns to ``interval`` when the working set moves by more than this fraction
    # from its value at that back-off, or at a back-off no probe caused.
    reset_change: Fraction = 0.1
    # fast descent: once memory.current stayed below memory.high for this long, lower it at
    # once to the peak of memory.current over that time plus descent_margin (at most by
    # max_descent of itself). None: off (senpai probes down max_probe per interval).
    descent_after: Duration | None = Field(default=None, gt=0)
    descent_margin: Fraction = 0.05
    max_descent: Fraction = 0.5

    @model_validator(mode="after")
    def _check(self) -> MemoryPressureParams:
        _ordered(self, "min", "max")
        _ordered(self, "interval", "max_interval")
        return self


class CpuQuotaParams(_Model):
    """Raise cpu.max while throttled, lower it toward a usage percentile while idle."""

    min: Cores = 0.1
    max: Cores = 4.0
    target_throttled: Fraction = 0.1  # throttled periods / periods that counts as starved
    raise_after: int = Field(default=3, ge=1)  # consecutive starved ticks before raising
    step_up: float = Field(default=0.5, gt=0, le=10)  # raise by this fraction of the quota
    idle_below: Fraction = 0.5  # usage / quota below which a tick counts as idle
    lower_after: int = Field(default=30, ge=1)  # consecutive idle ticks before lowering
    step_down: float = Field(default=0.2, gt=0, lt=1)  # lower at most this fraction at once
    percentile: float = Field(default=95.0, gt=0, le=100)  # of usage over ``window``
    window: Duration = Field(default=300.0, gt=0)
    margin: float = Field(default=0.3, ge=0, le=10)  # headroom over the percentile, fraction
    cooldown: Duration = 10.0
    period_us: int = Field(default=100_000, ge=1_000, le=1_000_000)
    # Off by default (see enforce.controllers.cpu_quota): a lowering smaller than min_step of
    # the quota is not written (dead band); raise_to_demand raises to the demand estimated
    # from cpu.pressure (usage / (1 - some)) plus margin, not just step_up; a raise waits
    # raise_cooldown after the last change (None: cooldown); lower_from_idle takes the
    # percentile over the current idle streak only, so a finished spike stops counting.
    min_step: float = Field(default=0.01, ge=0, lt=1)
    raise_to_demand: bool = False
    raise_cooldown: Duration | None = None
    lower_from_idle: bool = False

    @model_validator(mode="after")
    def _check(self) -> CpuQuotaParams:
        _ordered(self, "min", "max")
        return self


class PidsGuardParams(_Model):
    """pids.max = pids.current + headroom within [min, max]; fork storms are held."""

    headroom: int = Field(default=128, ge=1)
    min: int = Field(default=64, ge=1, le=PIDS_LIMIT)
    max: int = Field(default=8192, ge=1, le=PIDS_LIMIT)
    hold: Duration = 30.0  # no raise for this long after a refused fork (pids.events max)
    cooldown: Duration = 5.0

    @model_validator(mode="after")
    def _check(self) -> PidsGuardParams:
        _ordered(self, "min", "max")
        return self


class IoPressureParams(_Model):
    """While a protected cgroup's io pressure (some) is above ``target``, cap io.max of the
    rule's (lower-priority) cgroups on ``devices``; restore them once it stays below
    ``restore_below`` for ``hold``."""

    protect: tuple[Glob, ...] = Field(min_length=1)  # cgroup path globs
    devices: tuple[str, ...] = Field(min_length=1)  # MAJ:MIN
    target: Fraction = 0.2
    restore_below: Fraction = 0.05
    rbps: SizeOrMax = MAX
    wbps: SizeOrMax = MAX
    riops: PidsLimit = MAX
    wiops: PidsLimit = MAX
    hold: Duration = 10.0
    trigger_window: Duration = Field(default=1.0, ge=0.5, le=10.0)

    @model_validator(mode="after")
    def _check(self) -> IoPressureParams:
        _ordered(self, "restore_below", "target")
        for dev in self.devices:
            if not re.fullmatch(r"\d+:\d+", dev):
                raise ValueError(f"devices: {dev!r}: allowed MAJ:MIN like 8:0")
        if all(getattr(self, k) is MAX for k in ("rbps", "wbps", "riops", "wiops")):
            raise ValueError("no cap given: allowed at least one of rbps, wbps, riops, wiops")
        return self


class OomGuardParams(_Model):
    """oomd: when memory PSI ``full`` avg10 of ``watch`` stays above ``full_avg10`` for
    ``duration`` while reclaim runs, freeze then kill one of the rule's cgroups."""

    watch: str | None = None  # the cgroup whose pressure counts; None = the managed root
    full_avg10: Fraction = 0.3
    duration: Duration = Field(default=10.0, gt=0)
    choose: Literal["size", "growth"] = "size"
    prefer: tuple[Glob, ...] = ()  # path or name globs killed first
    avoid: tuple[Glob, ...] = ()  # never killed while another candidate exists
    post_action_delay: Duration = 15.0


CONTROLLERS = ("limits", "memory_pressure", "cpu_quota", "pids_guard", "io_pressure", "oom_guard")


class Rule(_Model):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")]
    mode: Mode = Mode.ENFORCE
    select: Selector = Field(default_factory=Selector)
    limits: LimitsParams | None = None
    memory_pressure: MemoryPressureParams | None = None
    cpu_quota: CpuQuotaParams | None = None
    pids_guard: PidsGuardParams | None = None
    io_pressure: IoPressureParams | None = None
    oom_guard: OomGuardParams | None = None

    def controllers(self) -> tuple[str, ...]:
        """The controllers this rule enables, in CONTROLLERS order."""
        return tuple(c for c in CONTROLLERS if getattr(self, c) is not None)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if not self.controllers():
            raise ValueError("enables no controller: allowed " + ", ".join(CONTROLLERS))
        return self


class Policy(_Model):
    """A whole policy. Build it with enforce.policy.load (which names file and line)."""

    model_config = ConfigDict(populate_by_name=True)

    settings: EnforcerSettings = Field(default_factory=EnforcerSettings, alias="enforcer")
    rules: tuple[Rule, ...] = Field(default=(), alias="rule")
    source: str = ""
