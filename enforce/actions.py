"""What the enforcer decides and what became of it: the one vocabulary shared by the
controllers (which return ``Action``s), the actuator (which applies them and writes an
``AuditEntry`` for each), the simulator (which applies them to a model of the kernel) and
the dashboard (which shows the audit).

An action names one kernel file of one cgroup and the value to write, typed as the
``runtime.cgroupfs`` writers take it; ``old`` is the value the decision was made against, so
the actuator can tell that something else changed the file since (and back off, as senpai
does).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import IntOrMax
from runtime.cgroupfs.io import Device, IoMax


class Mode(enum.Enum):
    """A rule's mode: ``enforce`` writes, ``dry-run`` logs what it would write, ``recommend``
    only reports a recommendation (plan and recommend output, no audit of a write)."""

    ENFORCE = "enforce"
    DRY_RUN = "dry-run"
    RECOMMEND = "recommend"


class Outcome(enum.Enum):
    """What the actuator did with an action."""

    APPLIED = "applied"  # written to the kernel file (or to the simulator's model)
    DRY_RUN = "dry-run"  # would have been written; nothing changed
    RECOMMENDED = "recommended"
    REFUSED = "refused"  # a safeguard stopped it; ``reason`` says which
    FAILED = "failed"  # the write raised (the cgroup vanished, EBUSY, ...)
    SKIPPED = "skipped"  # the file changed under us since the decision; re-read next tick


# The kernel files an action may write, with the value type each takes:
#   memory.high, memory.max, memory.low, memory.min, memory.swap.max, pids.max -> IntOrMax
#   cpu.max -> CpuMax; cpu.weight -> int; io.max -> IoLimit
#   cgroup.freeze -> bool; cgroup.kill -> True (kill the whole subtree)
WRITABLE_FILES = frozenset(
    {
        "memory.high",
        "memory.max",
        "memory.low",
        "memory.min",
        "memory.swap.max",
        "pids.max",
        "cpu.max",
        "cpu.weight",
        "io.max",
        "cgroup.freeze",
        "cgroup.kill",
    }
)


@dataclass(frozen=True, slots=True)
class IoLimit:
    """One device's io.max line."""

    device: Device
    limit: IoMax


Value: TypeAlias = IntOrMax | CpuMax | IoLimit | bool


@dataclass(frozen=True, slots=True)
class Action:
    """Write ``new`` to ``file`` of ``cgroup`` (a path relative to the cgroup2 root).

    ``inputs`` are the figures that decided it (e.g. {"pressure_usec": 12000.0,
    "memory_current": 5.2e8}), kept in the audit so a person can check the decision.
    """

    rule: str
    controller: str
    cgroup: str
    file: str
    old: Value | None
    new: Value
    mode: Mode
    reason: str
    inputs: Mapping[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.file not in WRITABLE_FILES:
            raise ValueError(
                f"action file {self.file!r}: the enforcer writes only "
                f"{', '.join(sorted(WRITABLE_FILES))}"
            )


def format_value(value: Value | None) -> str | None:
    """The value as the kernel file shows it ("max", "50000 100000", "8:0 rbps=... ")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, IoLimit):
        return value.limit.line(value.device)
    return str(value)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log (JSON lines; ``to_json``/``from_json`` in enforce.audit).

    ``time`` is Unix seconds; ``old``/``new`` are the kernel's text form (format_value).
    """

    time: float
    rule: str
    controller: str
    cgroup: str
    file: str
    old: str | None
    new: str
    mode: Mode
    outcome: Outcome
    reason: str
    inputs: Mapping[str, float | int | str] = field(default_factory=dict)

    @classmethod
    def of(cls, action: Action, outcome: Outcome, time: float, reason: str = "") -> AuditEntry:
        """The entry for ``action``; ``reason`` replaces the action's when given (a refusal
        names the safeguard)."""
        return cls(
            time=time,
            rule=action.rule,
            controller=action.controller,
            cgroup=action.cgroup,
            file=action.file,
            old=format_value(action.old),
            new=format_value(action.new) or "",
            mode=action.mode,
            outcome=outcome,
            reason=reason or action.reason,
            inputs=dict(action.inputs),
        )
