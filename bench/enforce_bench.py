"""The enforcer's simulation table (issue 6, "Performance"): corral's default policy against
the three baselines (fixed manual limits, the VPA recommender, an Autopilot-style moving
window) over the synthetic suite and any recordings given, scored by enforce.simulate.

    .venv/bin/python bench/enforce_bench.py OUT.json [--recording bench/out/bench.rec]

Writes OUT.json (every trace's scores, the suite totals and the issue's targets checked) and
prints the tables. The targets: corral's slack at most 15% (the mean over the traces of the
mean of memory and CPU slack), no more OOM kills than the Autopilot-style baseline, and
fewer limit changes than the VPA baseline (both summed over the traces).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enforce.policy.load import load_policies  # noqa: E402
from enforce.simulate.report import simulation_dict, table  # noqa: E402
from enforce.simulate.run import Simulation, simulate  # noqa: E402
from enforce.simulate.traces import SYNTHETIC, from_recording  # noqa: E402

DEFAULT_POLICY = ROOT / "enforce" / "policies" / "default.toml"
SLACK_TARGET = 0.15


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("out", help="Where to write the JSON results.")
    p.add_argument("--policy", default=str(DEFAULT_POLICY), help="Policy file or directory.")
    p.add_argument(
        "--recording",
        action="append",
        default=[],
        help="A `corral record` recording to add to the suite (repeatable).",
    )
    p.add_argument("--under", default="", help="Only the recording's cgroups under this path.")
    p.add_argument(
        "--reroot",
        default=None,
        help="Replay the recording's leaves under this path (corral: as corral containers).",
    )
    return p.parse_args(argv)


def totals(sims: list[Simulation]) -> dict[str, dict[str, Any]]:
    """Per policy: mean slack over the traces, summed OOM kills, throttled s and changes."""
    out: dict[str, dict[str, Any]] = {}
    for sim in sims:
        for score in sim.scores:
            t = out.setdefault(
                score.policy,
                {"slacks": [], "oom_kills": 0, "throttled_seconds": 0.0, "limit_changes": 0},
            )
            if score.slack is not None:
                t["slacks"].append(score.slack)
            t["oom_kills"] += score.oom_kills
            t["throttled_seconds"] += score.throttled_seconds
            t["limit_changes"] += score.limit_changes
    for t in out.values():
        slacks = t.pop("slacks")
        t["slack"] = round(sum(slacks) / len(slacks), 4) if slacks else None
        t["throttled_seconds"] = round(t["throttled_seconds"], 1)
    return out


def targets(tot: dict[str, dict[str, Any]]) -> dict[str, Any]:
    corral, vpa, auto = tot["corral"], tot["vpa"], tot["autopilot"]
    checks = {
        "slack_at_most_15pct": corral["slack"] is not None and corral["slack"] <= SLACK_TARGET,
        "oom_kills_at_most_autopilot": corral["oom_kills"] <= auto["oom_kills"],
        "fewer_changes_than_vpa": corral["limit_changes"] < vpa["limit_changes"],
    }
    return {**checks, "met": all(checks.values())}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    policy = load_policies(args.policy)
    traces = [make() for make in SYNTHETIC.values()]
    traces += [
        from_recording(path, under=args.under, reroot=args.reroot) for path in args.recording
    ]
    sims = []
    started = time.perf_counter()
    for trace in traces:
        print(f"simulating {trace.name} ({trace.ticks} ticks)...", file=sys.stderr)
        sims.append(simulate(trace, policy))
    tot = totals(sims)
    synthetic = totals(sims[: len(SYNTHETIC)])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "policy": policy.source or args.policy,
        "seconds": round(time.perf_counter() - started, 2),
        "traces": [simulation_dict(sim) for sim in sims],
        "totals": tot,
        "targets": targets(tot),
        # The same over the synthetic traces alone, when recordings were added.
        "synthetic_totals": synthetic,
        "synthetic_targets": targets(synthetic),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(sims))
    print()
    for name, t in tot.items():
        print(f"{name:10} {t}")
    print("targets:", result["targets"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
