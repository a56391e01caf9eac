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

    managed_root: str = Field(
        default="corral",
        description="Only cgroups at or below this path (under the cgroup2 mount) are ever "
        'written; "" is the whole tree, never the root cgroup itself.',
    )
    tick_seconds: Duration = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the enforcer decides (senpai's tick); PSI triggers wake it "
        "in between.",
    )
    max_writes_per_second: float = Field(
        default=20.0,
        gt=0,
        description="Limit writes per second across all cgroups (the actuator's rate limit); "
        "a write over it is refused and audited.",
    )
    memory_max_margin_bytes: Size = Field(
        default=64 * MiB,
        description="Safeguard: memory.max is never written below memory.current plus this.",
    )
    on_exit: Literal["leave", "restore"] = Field(
        default="leave",
        description='On exit, "leave" the limits as they are, or "restore" the value each '
        "file had before the enforcer first changed it.",
    )
    audit_log: str = Field(
        default="/var/log/corral/audit.jsonl",
        description="The JSON-lines audit log: one line per decision, applied or not.",
    )


class Selector(_Model):
    """Which cgroups a rule governs: every given criterion must match (none = all cgroups
    under the managed root). ``name`` globs the container/unit name, ``cgroup`` the path."""

    name: Glob | None = Field(
        default=None,
        description="fnmatch glob (case-sensitive) on the name the monitor gives the cgroup: "
        "the container's name, the systemd unit, the docker/podman/kubernetes id, else the "
        "last path component.",
    )
    kind: (
        Literal[
            "container", "service", "scope", "slice", "docker", "podman", "kubernetes", "cgroup"
        ]
        | None
    ) = Field(
        default=None,
        description='The kind the monitor gives the cgroup: a corral "container", a systemd '
        '"service", "scope" or "slice", a "docker", "podman" or "kubernetes" container, or '
        'a plain "cgroup".',
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels that must all be present with these values (a corral "
        "container's --label K=V).",
    )
    cgroup: Glob | None = Field(
        default=None,
        description='fnmatch glob on the cgroup path below the cgroup2 mount, like "corral/*".',
    )


class LimitsParams(_Model):
    """Static limits, re-applied whenever something else changes them (drift is logged).
    At least one key is required, and memory_min <= memory_low <= memory_high <= memory_max."""

    memory_max: SizeOrMax | None = Field(
        default=None, description="memory.max: the hard limit (reclaim, then the OOM killer)."
    )
    memory_high: SizeOrMax | None = Field(
        default=None, description="memory.high: the throttle limit (reclaim, never a kill)."
    )
    memory_low: SizeOrMax | None = Field(
        default=None, description="memory.low: best-effort protection from reclaim."
    )
    memory_min: SizeOrMax | None = Field(
        default=None, description="memory.min: hard protection from reclaim."
    )
    cpu_max: CpuLimit | None = Field(
        default=None, description="cpu.max: the CPU quota, in cores or QUOTA/PERIOD."
    )
    cpu_weight: int | None = Field(
        default=None,
        ge=WEIGHT_MIN,
        le=WEIGHT_MAX,
        description="cpu.weight: the share of CPU under contention (the kernel's default is 100).",
    )
    io_max: IoLimits | None = Field(
        default=None,
        description='io.max lines, each "DEVICE KEY=VALUE ..." (rbps, wbps, riops, wiops).',
    )
    pids_max: PidsLimit | None = Field(
        default=None, description="pids.max: fork(2) fails with EAGAIN beyond it."
    )

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
    ``pressure`` per ``interval``. Defaults are senpai.py's. min <= max, and interval <=
    max_interval."""

    interval: Duration = Field(
        default=6.0, gt=0, description="Quiet time (no stall over target) before a probe down."
    )
    pressure: Duration = Field(
        default=0.010,
        gt=0,
        description="Target stall: memory.pressure some time accumulated since the last "
        "change; above it memory.high backs off at once.",
    )
    max_probe: float = Field(
        default=0.01,
        gt=0,
        le=1,
        description="Largest squeeze of one probe, a fraction of memory.high.",
    )
    max_backoff: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Largest loosening of one back-off, a fraction of memory.high (1: double).",
    )
    coeff_probe: float = Field(
        default=10.0,
        gt=0,
        description="A probe lowers by (pressure / stall / coeff_probe)^2 of max_probe.",
    )
    coeff_backoff: float = Field(
        default=20.0,
        gt=0,
        description="A back-off raises by (stall / pressure / coeff_backoff)^2 of max_backoff.",
    )
    min: Size = Field(
        default=100 * MiB,
        description="Added to the unreclaimable floor (memory.current minus the file cache): "
        "memory.high never goes below floor plus this.",
    )
    max: Size = Field(default=100 * GiB, description="memory.high never goes above this.")
    trigger_window: Duration = Field(
        default=1.0,
        ge=0.5,
        le=10.0,
        description="Window of the PSI trigger that wakes a back-off within that time of a stall.",
    )
    # Not senpai's: when set, memory.max is raised (never lowered) to keep this fraction of
    # headroom above memory.high, so growth meets throttling rather than the OOM killer.
    memory_max_headroom: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="Not senpai's: raise memory.max (never lower it) to keep this fraction "
        "of headroom above memory.high, so growth meets throttling rather than the OOM killer. "
        "Unset: memory.max is left alone.",
    )
    # Not senpai's, each off by default (see enforce.controllers.memory_pressure).
    min_step: Fraction = Field(
        default=0.0,
        description="Dead band: probes smaller than this fraction of memory.high accumulate "
        "until they reach it, and a back-off is at least this (fewer, larger writes). 0: off.",
    )
    interval_growth: float = Field(
        default=1.0,
        ge=1.0,
        le=10.0,
        description="Adaptive interval: after a back-off that a probe caused, the quiet "
        "interval is multiplied by this, up to max_interval. 1: off.",
    )
    max_interval: Duration | None = Field(
        default=None, gt=0, description="Cap of the adaptive interval. Unset: 8 x interval."
    )
    reset_change: Fraction = Field(
        default=0.1,
        description="The interval returns to `interval` when the working set moves by more "
        "than this fraction from its value at that back-off, or at a back-off no probe caused.",
    )
    descent_after: Duration | None = Field(
        default=None,
        gt=0,
        description="Fast descent: once memory.current stayed below memory.high for this "
        "long, lower memory.high at once to that time's peak of memory.current plus "
        "descent_margin. Unset: off (probes go down max_probe per interval).",
    )
    descent_margin: Fraction = Field(
        default=0.05, description="Fast descent: headroom over the peak, a fraction of it."
    )
    max_descent: Fraction = Field(
        default=0.5,
        description="Fast descent: the largest drop of one write, a fraction of memory.high.",
    )

    @model_validator(mode="after")
    def _check(self) -> MemoryPressureParams:
        _ordered(self, "min", "max")
        _ordered(self, "interval", "max_interval")
        return self


class CpuQuotaParams(_Model):
    """Raise cpu.max while throttled, lower it toward a usage percentile while idle.
    min <= max."""

    min: Cores = Field(default=0.1, description="The lowest quota, in cores.")
    max: Cores = Field(default=4.0, description="The highest quota, in cores.")
    target_throttled: Fraction = Field(
        default=0.1,
        description="Throttled periods / periods (cpu.stat, this cgroup's own cpu.max) above "
        "which a tick counts as starved.",
    )
    raise_after: int = Field(
        default=3, ge=1, description="Consecutive starved ticks before raising."
    )
    step_up: float = Field(
        default=0.5, gt=0, le=10, description="Raise by this fraction of the quota."
    )
    idle_below: Fraction = Field(
        default=0.5, description="Usage / quota below which a tick counts as idle."
    )
    lower_after: int = Field(
        default=30, ge=1, description="Consecutive idle ticks before lowering."
    )
    step_down: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Lower by at most this fraction of the quota at once.",
    )
    percentile: float = Field(
        default=95.0,
        gt=0,
        le=100,
        description="Lower toward this percentile of usage over `window` (plus margin).",
    )
    window: Duration = Field(default=300.0, gt=0, description="The usage history considered.")
    margin: float = Field(
        default=0.3, ge=0, le=10, description="Headroom over the percentile, a fraction of it."
    )
    cooldown: Duration = Field(
        default=10.0, description="No change within this long of the last applied one."
    )
    period_us: int = Field(
        default=100_000,
        ge=1_000,
        le=1_000_000,
        description="The cpu.max period written with the quota, in microseconds.",
    )
    # Off by default (see enforce.controllers.cpu_quota).
    min_step: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Dead band: a lowering smaller than this fraction of the quota is not written.",
    )
    raise_to_demand: bool = Field(
        default=False,
        description="Raise a starved quota in one write to the demand cpu.pressure shows "
        "(usage / (1 - some)) plus margin, not just by step_up.",
    )
    raise_cooldown: Duration | None = Field(
        default=None,
        description="A raise waits this long after the last change. Unset: cooldown.",
    )
    lower_from_idle: bool = Field(
        default=False,
        description="Take the percentile over the current idle streak only, so a finished "
        "spike stops holding the quota up.",
    )

    @model_validator(mode="after")
    def _check(self) -> CpuQuotaParams:
        _ordered(self, "min", "max")
        return self


class PidsGuardParams(_Model):
    """pids.max = pids.current + headroom within [min, max]; fork storms are held.
    min <= max."""

    headroom: int = Field(
        default=128, ge=1, description="pids.max is kept this far above pids.current."
    )
    min: int = Field(default=64, ge=1, le=PIDS_LIMIT, description="The lowest pids.max.")
    max: int = Field(default=8192, ge=1, le=PIDS_LIMIT, description="The highest pids.max.")
    hold: Duration = Field(
        default=30.0,
        description="No raise for this long after a refused fork (pids.events max): a fork "
        "storm meets the limit instead of being followed.",
    )
    cooldown: Duration = Field(default=5.0, description="No two pids.max changes within this long.")

    @model_validator(mode="after")
    def _check(self) -> PidsGuardParams:
        _ordered(self, "min", "max")
        return self


class IoPressureParams(_Model):
    """While a protected cgroup's io pressure (some) is above ``target``, cap io.max of the
    rule's (lower-priority) cgroups on ``devices``; restore them once it stays below
    ``restore_below`` for ``hold``. restore_below <= target, and at least one of rbps, wbps,
    riops, wiops is given."""

    protect: tuple[Glob, ...] = Field(
        min_length=1, description="Globs on the cgroup paths of the protected cgroups."
    )
    devices: tuple[str, ...] = Field(
        min_length=1, description='The block devices to cap, as MAJ:MIN ("8:0").'
    )
    target: Fraction = Field(
        default=0.2,
        description="io.pressure some (stall time / wall time) of a protected cgroup above "
        "which the caps go on.",
    )
    restore_below: Fraction = Field(
        default=0.05, description="The caps come off once the pressure stays below this."
    )
    rbps: SizeOrMax = Field(default=MAX, description="Read bytes per second of a cap.")
    wbps: SizeOrMax = Field(default=MAX, description="Written bytes per second of a cap.")
    riops: PidsLimit = Field(default=MAX, description="Read operations per second of a cap.")
    wiops: PidsLimit = Field(default=MAX, description="Write operations per second of a cap.")
    hold: Duration = Field(
        default=10.0,
        description="How long the pressure must stay below restore_below before the caps come off.",
    )
    trigger_window: Duration = Field(
        default=1.0, ge=0.5, le=10.0, description="Window of the io PSI trigger."
    )

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

    watch: str | None = Field(
        default=None,
        description="The cgroup whose memory pressure counts. Unset: the managed root.",
    )
    full_avg10: Fraction = Field(
        default=0.3,
        description="memory.pressure full avg10 (the share of the last 10 s in which every "
        "task stalled on memory) above which the watched cgroup is in trouble.",
    )
    duration: Duration = Field(
        default=10.0,
        gt=0,
        description="How long the pressure must stay above full_avg10, with reclaim running, "
        "before a kill.",
    )
    choose: Literal["size", "growth"] = Field(
        default="size",
        description='The victim: the largest ("size", memory.current) or the one that grew '
        'most over duration ("growth").',
    )
    prefer: tuple[Glob, ...] = Field(default=(), description="Path or name globs killed first.")
    avoid: tuple[Glob, ...] = Field(
        default=(), description="Path or name globs never killed while another candidate exists."
    )
    post_action_delay: Duration = Field(
        default=15.0,
        description="Nothing more is done for this long after a kill, so the freed memory "
        "shows in the pressure (oomd's).",
    )


CONTROLLERS = ("limits", "memory_pressure", "cpu_quota", "pids_guard", "io_pressure", "oom_guard")


class Rule(_Model):
    """[[rule]]: a selector and the controllers it enables. Rules are tried in file order; for
    each controller the first rule that enables it and selects a cgroup governs that cgroup.
    At least one controller is required."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            pattern=r"^[A-Za-z0-9_.:-]+$",
            description="Unique name of the rule, in the audit log and the metrics.",
        ),
    ]
    mode: Mode = Field(
        default=Mode.ENFORCE,
        description='"enforce" writes, "dry-run" audits what it would write, "recommend" '
        "only reports (corral policy plan and recommend).",
    )
    select: Selector = Field(
        default_factory=Selector, description="Which cgroups the rule governs."
    )
    limits: LimitsParams | None = Field(default=None, description="Static limits.")
    memory_pressure: MemoryPressureParams | None = Field(
        default=None, description="senpai: memory.high follows memory pressure."
    )
    cpu_quota: CpuQuotaParams | None = Field(default=None, description="cpu.max follows demand.")
    pids_guard: PidsGuardParams | None = Field(
        default=None, description="pids.max follows pids.current; fork storms are held."
    )
    io_pressure: IoPressureParams | None = Field(
        default=None, description="Caps io.max while a protected cgroup stalls on io."
    )
    oom_guard: OomGuardParams | None = Field(
        default=None, description="oomd: freeze and kill one cgroup under memory thrashing."
    )

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
