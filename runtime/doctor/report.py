"""Turn probe results into checks: what works, what is missing, what that disables, the fix.

A host is *degraded* when any check is ``degraded`` or ``missing``; ``info`` never is (it
says how things are, e.g. corral's parent cgroup not existing yet, or KVM not usable).
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.doctor import features as F
from runtime.doctor.checks import (
    Check,
    Status,
    cgroup_checks,
    kernel_checks,
    machine_checks,
    namespace_checks,
    privilege_checks,
    psi_checks,
    userns_checks,
)
from runtime.doctor.facts import Facts

__all__ = ["Check", "Report", "Status", "diagnose", "summary"]


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    summary: str

    @property
    def degraded(self) -> bool:
        return any(c.problem for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 1 if self.degraded else 0


def diagnose(facts: Facts, corral: str = "corral") -> Report:
    """``corral`` is how the user runs corral, for the exact commands in the fixes."""
    checks = [
        *kernel_checks(facts),
        *cgroup_checks(facts, corral),
        *psi_checks(facts, corral),
        *namespace_checks(facts),
        *userns_checks(facts),
        *privilege_checks(facts),
        *machine_checks(facts, corral),
    ]
    return Report(checks, summary(facts))


def summary(facts: Facts) -> str:
    """One line: the layout, what works, what does not (DESIGN.md: say exactly which)."""
    layout = facts.layout
    phrase = {
        "unified": "cgroup v2 unified",
        "hybrid": "cgroup v2 hybrid",
        "legacy": "cgroup v1 only (legacy)",
        "none": "no cgroup filesystem mounted",
    }[layout.kind]
    have = facts.root_available
    absent = [c for c in F.NEEDED_CONTROLLERS if c not in have]
    good = []
    if not absent:
        good.append("controllers " + " ".join(F.NEEDED_CONTROLLERS))
    if facts.cpu_stat is not None and facts.cpu_stat.usage:
        good.append("cpu.stat usage")
    if facts.psi.available:
        good.append("PSI")
    parts = [phrase]
    if good:
        parts.append(f"{_and(good)} available")
    parts += _lost_controllers(facts, absent)
    failed_ns = [n for n, r in facts.namespaces.items() if not r.ok]
    if failed_ns:
        parts.append(f"{_and(failed_ns)} namespace{'s' if len(failed_ns) > 1 else ''} unavailable")
    else:
        parts.append("all eight namespaces work")
    if not (facts.privileges.euid == 0 or facts.privileges.cap_sys_admin):
        parts.append("not root: containers and limits unavailable")
    if layout.kind != "unified" and facts.machine.ready:
        parts.append("full cgroup v2 in `corral machine run`")
    return "; ".join(parts)


def _lost_controllers(facts: Facts, absent: list[str]) -> list[str]:
    stats = [c for c in absent if c in ("memory", "io", "pids")]
    others = [c for c in absent if c not in stats]
    names = {"cpu": "cpu limits", "cpuset": "--cpuset-cpus"}
    lost = _and([names[c] for c in others])
    out = [f"{_and(stats)} limits and stats unavailable"] if stats else []
    if not others:
        return out
    bound = [c for c in others if facts.layout.v1_mounts_of(c)]
    if bound != others:
        return [*out, f"{lost} unavailable"]
    verb = "is a v1 controller" if len(bound) == 1 else "are v1 controllers"
    why = f"since {_and(bound)} {verb} here"
    if out:
        return [f"{out[0]} (and {lost}, {why})"]
    return [f"{lost} unavailable ({why})"]


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
