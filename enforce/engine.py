"""The Engine: a policy's decisions over a history of snapshots, with every controller's
state in one place.

``decide`` is pure with respect to the kernel (no I/O): the live loop, ``corral policy
plan`` and the simulator all call it on Snapshots. ``observe`` feeds back what the actuator
did (cooldowns start at an APPLIED change; a SKIPPED action - the file changed under us -
makes the controller forget its state and re-read, as senpai does on an external change).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from enforce.actions import Action, AuditEntry, Value
from enforce.controllers import (
    Decision,
    Target,
    cpu_quota,
    io_pressure,
    limits,
    memory_pressure,
    oom_guard,
    pids_guard,
)
from enforce.policy.schema import Policy, Rule
from enforce.policy.select import Assignment, assign
from monitor.snapshot import Snapshot

# Controllers deciding for each cgroup on its own, and those deciding over all the cgroups a
# rule selects at once (oom_guard picks one victim; io_pressure caps many for one protected).
PER_CGROUP = ("limits", "memory_pressure", "cpu_quota", "pids_guard")
PER_RULE = ("io_pressure", "oom_guard")

StateKey = tuple[str, str, str]  # (rule, controller, cgroup); cgroup "" for PER_RULE


class Engine:
    """Decides what a policy wants now. Not thread-safe: one loop calls it."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._states: dict[StateKey, Any] = {}
        self._originals: dict[tuple[str, str], Value | None] = {}
        self._notes: list[str] = []
        self._rules = {rule.name: rule for rule in policy.rules}

    def decide(self, history: Sequence[Snapshot]) -> list[Action]:
        """The actions the policy wants given ``history`` (oldest first, newest = now).

        Actions are not checked against safeguards here: the actuator (and the simulator)
        run enforce.safeguards.refusal and audit the refusals."""
        if not history:
            return []
        snapshot = history[-1]
        assignments = assign(self.policy, snapshot)
        actions: list[Action] = []
        self._notes = []
        groups: dict[tuple[str, str], list[str]] = {}
        for a in assignments:
            if a.controller in PER_RULE:
                groups.setdefault((a.rule.name, a.controller), []).append(a.cgroup)
                continue
            actions.extend(self._run_one(a, history))
        for (rule_name, controller), cgroups in groups.items():
            actions.extend(self._run_group(self._rules[rule_name], controller, cgroups, history))
        self._forget_gone(snapshot)
        for action in actions:
            self._originals.setdefault((action.cgroup, action.file), action.old)
        return actions

    def observe(self, entries: Sequence[AuditEntry]) -> None:
        """What became of the last decide()'s actions (the actuator's audit entries)."""
        for entry in entries:
            cgroup = "" if entry.controller in PER_RULE else entry.cgroup
            key = (entry.rule, entry.controller, cgroup)
            state = self._states.get(key)
            if state is None:
                continue
            new = _MODULES[entry.controller].observe(state, entry)
            if new is None:
                del self._states[key]
            else:
                self._states[key] = new

    def triggers(self, snapshot: Snapshot) -> list[tuple[str, str, str]]:
        """PSI triggers the loop should arm now: (cgroup, "memory"|"io", "some T W")."""
        out: list[tuple[str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for a in assign(self.policy, snapshot):
            found: list[tuple[str, str, str]] = []
            if a.controller == "memory_pressure" and a.rule.memory_pressure is not None:
                found = [memory_pressure.trigger(a.rule.memory_pressure, a.cgroup)]
            elif a.controller == "io_pressure" and a.rule.io_pressure is not None:
                found = io_pressure.triggers(a.rule.io_pressure, snapshot)
            for trig in found:
                if (trig[0], trig[1]) not in seen:
                    seen.add((trig[0], trig[1]))
                    out.append(trig)
        return out

    def successor(self, policy: Policy) -> Engine:
        """An engine for ``policy`` (a reload) that keeps this one's controller state for the
        rules whose definition did not change and every original value to restore."""
        engine = Engine(policy)
        kept = {r.name for r in policy.rules if self._rules.get(r.name) == r}
        engine._states = {k: v for k, v in self._states.items() if k[0] in kept}
        engine._originals = dict(self._originals)
        return engine

    def originals(self) -> Mapping[tuple[str, str], Value | None]:
        """(cgroup, file) -> the value first seen before any decision to change it, for
        ``on_exit = "restore"``."""
        return dict(self._originals)

    def notes(self) -> list[str]:
        """Reports of the last decide() that are not writes (fork storms, held limits)."""
        return list(self._notes)

    def state(self, rule: str, controller: str, cgroup: str = "") -> Any:
        """A controller's current state (for plan output, tests and the dashboard)."""
        return self._states.get((rule, controller, cgroup))

    # -- internals --------------------------------------------------------------------

    def _run_one(self, a: Assignment, history: Sequence[Snapshot]) -> tuple[Action, ...]:
        key = (a.rule.name, a.controller, a.cgroup)
        target = Target(a.rule.name, a.rule.mode, a.controller)
        state = self._states.get(key)
        decision: Decision[Any]
        if a.controller == "limits" and a.rule.limits is not None:
            decision = limits.decide(a.rule.limits, target, a.cgroup, history, state)
        elif a.controller == "memory_pressure" and a.rule.memory_pressure is not None:
            decision = memory_pressure.decide(
                a.rule.memory_pressure, target, a.cgroup, history, state
            )
        elif a.controller == "cpu_quota" and a.rule.cpu_quota is not None:
            decision = cpu_quota.decide(a.rule.cpu_quota, target, a.cgroup, history, state)
        elif a.controller == "pids_guard" and a.rule.pids_guard is not None:
            decision = pids_guard.decide(a.rule.pids_guard, target, a.cgroup, history, state)
        else:
            return ()
        return self._keep(key, decision)

    def _run_group(
        self, rule: Rule, controller: str, cgroups: list[str], history: Sequence[Snapshot]
    ) -> tuple[Action, ...]:
        key = (rule.name, controller, "")
        target = Target(rule.name, rule.mode, controller)
        state = self._states.get(key)
        decision: Decision[Any]
        if controller == "io_pressure" and rule.io_pressure is not None:
            decision = io_pressure.decide(rule.io_pressure, target, cgroups, history, state)
        elif controller == "oom_guard" and rule.oom_guard is not None:
            root = self.policy.settings.managed_root
            decision = oom_guard.decide(rule.oom_guard, target, cgroups, history, state, root)
        else:
            return ()
        return self._keep(key, decision)

    def _keep(self, key: StateKey, decision: Decision[Any]) -> tuple[Action, ...]:
        self._states[key] = decision.state
        self._notes.extend(f"{key[0]}/{key[1]}: {note}" for note in decision.notes)
        return decision.actions

    def _forget_gone(self, snapshot: Snapshot) -> None:
        """Drop the state of cgroups that vanished (a new cgroup at the path starts afresh)."""
        present = snapshot.sample.cgroups
        for key in [k for k in self._states if k[2] and k[2] not in present]:
            del self._states[key]


_MODULES: dict[str, Any] = {
    "limits": limits,
    "memory_pressure": memory_pressure,
    "cpu_quota": cpu_quota,
    "pids_guard": pids_guard,
    "io_pressure": io_pressure,
    "oom_guard": oom_guard,
}
