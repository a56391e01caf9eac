"""Simulation results as JSON and as a side-by-side table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from enforce.simulate.run import Simulation
from enforce.simulate.score import Score

COLUMNS = (
    ("policy", "policy"),
    ("slack", "slack"),
    ("mem slack", "memory_slack"),
    ("cpu slack", "cpu_slack"),
    ("OOM kills", "oom_kills"),
    ("throttled s", "throttled_seconds"),
    ("changes", "limit_changes"),
    ("reaction s", "reaction_seconds"),
    ("answered", "answered"),
    ("fork fails", "fork_failures"),
    ("refused", "refusals"),
)


def score_dict(score: Score) -> dict[str, Any]:
    return {
        "policy": score.policy,
        "trace": score.trace,
        "slack": _round(score.slack),
        "memory_slack": score.memory_slack,
        "cpu_slack": score.cpu_slack,
        "oom_kills": score.oom_kills,
        "throttled_seconds": score.throttled_seconds,
        "limit_changes": score.limit_changes,
        "reaction_seconds": score.reaction_seconds,
        "pressure_episodes": score.episodes,
        "answered": score.answered,
        "fork_failures": score.fork_failures,
        "kills": score.kills,
        "refusals": score.refusals,
        "ticks": score.ticks,
        "changes_by_file": dict(score.changes_by_file),
    }


def simulation_dict(sim: Simulation) -> dict[str, Any]:
    trace = sim.trace
    return {
        "trace": trace.name,
        "description": trace.description.strip(),
        "tick_seconds": trace.tick_seconds,
        "ticks": trace.ticks,
        "cgroups": [w.cgroup for w in trace.workloads],
        "results": [score_dict(s) for s in sim.scores],
    }


def table(sims: Sequence[Simulation]) -> str:
    """One block per trace: a row per policy, the columns of COLUMNS."""
    blocks = []
    for sim in sims:
        head = f"trace {sim.trace.name} ({sim.trace.ticks} ticks of {sim.trace.tick_seconds:g} s)"
        rows = [[title for title, _ in COLUMNS]]
        for score in sim.scores:
            d = score_dict(score)
            rows.append([_cell(key, d[key], d) for _, key in COLUMNS])
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                           enumerate(zip(row, widths, strict=True))) for row in rows]  # fmt: skip
        blocks.append("\n".join([head, *lines]))
    return "\n\n".join(blocks)


def _cell(key: str, value: Any, row: dict[str, Any]) -> str:
    if value is None:
        return "-"
    if key in ("slack", "memory_slack", "cpu_slack"):
        return f"{100 * value:.1f}%"
    if key == "answered":
        return f"{value}/{row['pressure_episodes']}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
