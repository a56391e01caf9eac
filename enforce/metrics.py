"""The enforcer's Prometheus families, rendered after the snapshot's by the exporter.

- ``corral_enforcer_actions_total{rule,controller,action}``: actions by outcome (``action``
  is the Outcome's value: applied, dry-run, recommended, refused, failed, skipped);
- ``corral_enforcer_refusals_total{rule,controller,reason_kind}``: refusals by safeguard,
  ``reason_kind`` one of REASON_KINDS (a fixed set: the reason text itself is free-form);
- ``corral_enforcer_target_memory_high_bytes{cgroup}``, ``..._target_cpu_limit_cores{cgroup}``,
  ``..._target_pids_limit{cgroup}``: the value the enforcer last set (or, in dry-run, would
  have set), named after the corresponding limit series of the catalogue; a target of
  ``max`` has no series, as there;
- ``corral_enforcer_last_decision_timestamp_seconds``: Unix time of the last decision round.

Written with monitor.exporter.writer's helpers, so the text and OpenMetrics forms follow
the same rules (sorted labels, escaping, ``_total`` munging, ``# UNIT``) as the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

from enforce.actions import AuditEntry, Outcome
from monitor.exporter.metrics import Metric
from monitor.exporter.render import cgroup_label
from monitor.exporter.writer import format_value, header, label_pairs
from runtime.cgroupfs.cpu import parse_cpu_max
from runtime.cgroupfs.errors import ParseError

ACTIONS = Metric(
    "corral_enforcer_actions_total", "counter", "", "enforce.actuator",
    "Actions the enforcer decided, by rule, controller and what became of them (action:"
    " applied, dry-run, recommended, refused, failed, skipped).",
    ("rule", "controller", "action"),
)  # fmt: skip
REFUSALS = Metric(
    "corral_enforcer_refusals_total", "counter", "", "enforce.safeguards",
    "Actions a safeguard or the rate limit refused, by the kind of reason (the audit log"
    " has the full reason).", ("rule", "controller", "reason_kind"),
)  # fmt: skip
TARGET_MEMORY_HIGH = Metric(
    "corral_enforcer_target_memory_high_bytes", "gauge", "bytes", "memory.high",
    "memory.high the enforcer last set (or would have set, in dry-run). No series for 'max'.",
    ("cgroup",),
)  # fmt: skip
TARGET_CPU = Metric(
    "corral_enforcer_target_cpu_limit_cores", "gauge", "", "cpu.max",
    "cpu.max in cores the enforcer last set (or would have set, in dry-run)."
    " No series for 'max'.", ("cgroup",),
)  # fmt: skip
TARGET_PIDS = Metric(
    "corral_enforcer_target_pids_limit", "gauge", "", "pids.max",
    "pids.max the enforcer last set (or would have set, in dry-run). No series for 'max'.",
    ("cgroup",),
)  # fmt: skip
LAST_DECISION = Metric(
    "corral_enforcer_last_decision_timestamp_seconds", "gauge", "seconds", "enforce.loop",
    "Unix time of the enforcer's last decision round.",
)  # fmt: skip
FAMILIES = (ACTIONS, REFUSALS, TARGET_MEMORY_HIGH, TARGET_CPU, TARGET_PIDS, LAST_DECISION)
_TARGETS = {"memory.high": TARGET_MEMORY_HIGH, "cpu.max": TARGET_CPU, "pids.max": TARGET_PIDS}

# Refusal reasons by the words enforce.safeguards and the actuator use; the first match wins.
REASON_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limit", ("rate limit",)),
    ("managed_root", ("outside the managed root",)),
    ("root", ("root cgroup",)),
    ("init_scope", ("init.scope",)),
    ("own_cgroup", ("holds the enforcer",)),
    ("gone", ("not in the snapshot",)),
    ("memory_margin", ("below memory.current",)),
    ("bad_value", ("not a value this file takes",)),
)
OTHER = "other"


def reason_kind(reason: str) -> str:
    """The fixed label value for a refusal reason (``other`` when none matches)."""
    text = reason.lower()
    for kind, words in REASON_KINDS:
        if any(w in text for w in words):
            return kind
    return OTHER


class EnforcerMetrics:
    """Counts the audit entries it is given; ``render`` writes them. Thread-safe: the loop
    records, the exporter renders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: dict[tuple[str, str, str], int] = {}
        self._refusals: dict[tuple[str, str, str], int] = {}
        self._targets: dict[tuple[str, str], float] = {}  # (file, cgroup) -> value
        self._last_decision: float | None = None

    def record(self, entries: Iterable[AuditEntry]) -> None:
        with self._lock:
            for e in entries:
                key = (e.rule, e.controller, e.outcome.value)
                self._actions[key] = self._actions.get(key, 0) + 1
                if e.outcome is Outcome.REFUSED:
                    rkey = (e.rule, e.controller, reason_kind(e.reason))
                    self._refusals[rkey] = self._refusals.get(rkey, 0) + 1
                if e.outcome in (Outcome.APPLIED, Outcome.DRY_RUN) and e.file in _TARGETS:
                    self._set_target(e.file, e.cgroup, e.new)

    def _set_target(self, file: str, cgroup: str, text: str) -> None:
        value: float | None
        if file == "cpu.max":
            try:
                value = parse_cpu_max(text, "cpu.max").cores
            except ParseError:
                value = None
        else:
            value = None if text == "max" else float(text)
        if value is None:
            self._targets.pop((file, cgroup), None)
        else:
            self._targets[(file, cgroup)] = value

    def decided(self, wall_time: float) -> None:
        """A decision round ran at ``wall_time`` (Unix seconds)."""
        with self._lock:
            self._last_decision = wall_time

    def retain(self, cgroups: Collection[str]) -> None:
        """Drop the targets of cgroups not in ``cgroups`` (those that no longer exist)."""
        with self._lock:
            for key in [k for k in self._targets if k[1] not in cgroups]:
                del self._targets[key]

    def render(self, openmetrics: bool = False) -> bytes:
        """Every family with at least one sample, as exposition text (no ``# EOF``)."""
        with self._lock:
            samples: dict[Metric, list[tuple[dict[str, str], float]]] = {
                ACTIONS: [(dict(zip(ACTIONS.labels, k, strict=True)), float(n))
                          for k, n in sorted(self._actions.items())],
                REFUSALS: [(dict(zip(REFUSALS.labels, k, strict=True)), float(n))
                           for k, n in sorted(self._refusals.items())],
                **{m: [({"cgroup": cgroup_label(c)}, v)
                       for (f, c), v in sorted(self._targets.items()) if f == file]
                   for file, m in _TARGETS.items()},
                LAST_DECISION: [] if self._last_decision is None
                else [({}, self._last_decision)],
            }  # fmt: skip
        out = []
        for metric in FAMILIES:
            points = samples[metric]
            if not points:
                continue
            out.append(header(metric, metric.help, openmetrics))
            for labels, value in points:
                pairs = f"{{{label_pairs(labels.keys(), labels.values())}}}" if labels else ""
                out.append(f"{metric.name}{pairs} {format_value(value)}\n")
        return "".join(out).encode()
