"""The enforcer's sections of BENCHMARKS.md, from bench/out/enforce_sim.json (the simulation
table, bench/enforce_bench.py, on the host) and bench/out/enforce_machine.json (reaction time
and cache plus hot set on the real kernel, bench/enforce_machine_bench.py, in the machine)."""

from __future__ import annotations

from typing import Any

POLICIES = ("corral", "fixed", "vpa", "autopilot")
SYNTHETIC_NAMES = ("diurnal", "step", "leak", "spiky_batch", "fork_storm")
NAMES = {
    "corral": "corral (default policy)",
    "fixed": "fixed manual limits",
    "vpa": "VPA recommender",
    "autopilot": "Autopilot-style moving window",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def simulation(sim: dict[str, Any]) -> list[str]:
    totals, targets = sim["totals"], sim["targets"]
    lines = [
        "## Enforcer: simulation against the baselines",
        "",
        f"`bench/enforce_bench.py`, policy `{sim['policy']}`: each trace replayed through the "
        "same Engine and safeguards as the live loop against a model of the kernel's "
        "response, beside the baselines implemented from their published algorithms. Slack "
        "is unused limit / limit (mean of memory and CPU, time-averaged); a change is one "
        "limit write.",
        "",
        "| trace | policy | slack | memory slack | CPU slack | OOM kills | throttled s | changes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for trace in sim["traces"]:
        for r in trace["results"]:
            lines.append(
                f"| {trace['trace']} | {r['policy']} | {_pct(r['slack'])} | "
                f"{_pct(r['memory_slack'])} | {_pct(r['cpu_slack'])} | {r['oom_kills']} | "
                f"{r['throttled_seconds']:.1f} | {r['limit_changes']} |"
            )
    suites = [("traces, the recording included", totals, targets)]
    if "synthetic_totals" in sim and len(sim["traces"]) > len(SYNTHETIC_NAMES):
        suites.insert(0, ("synthetic traces", sim["synthetic_totals"], sim["synthetic_targets"]))
    for label, tot, tgt in suites:
        lines += _suite(label, tot, tgt)
    return lines


def _suite(label: str, totals: dict[str, Any], targets: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"| over the {label} | slack | OOM kills | throttled s | changes |",
        "|---|---|---|---|---|",
    ]
    for name in POLICIES:
        t = totals[name]
        lines.append(
            f"| {NAMES[name]} | {_pct(t['slack'])} | {t['oom_kills']} | "
            f"{t['throttled_seconds']:.1f} | {t['limit_changes']} |"
        )
    c, a, v = totals["corral"], totals["autopilot"], totals["vpa"]
    lines += [
        "",
        f"| target, over the {label} | corral | against | |",
        "|---|---|---|---|",
        f"| slack at most 15% | {_pct(c['slack'])} | 15% | "
        f"{_met(targets['slack_at_most_15pct'])} |",
        f"| no more OOM kills than Autopilot-style | {c['oom_kills']} | {a['oom_kills']} | "
        f"{_met(targets['oom_kills_at_most_autopilot'])} |",
        f"| fewer limit changes than VPA | {c['limit_changes']} | {v['limit_changes']} | "
        f"{_met(targets['fewer_changes_than_vpa'])} |",
        "",
    ]
    return lines


def machine(m: dict[str, Any]) -> list[str]:
    react, cache = m["reaction"], m["cache_and_hot"]
    med = cache["median"]
    onset = react["median_from_onset"]
    lines = [
        "## Enforcer on the real kernel",
        "",
        f"`bench/enforce_machine_bench.py` in the machine (kernel {m['kernel']}, emulated).",
        "",
        "| measurement | corral | target | |",
        "|---|---|---|---|",
        f"| memory pressure onset -> first memory.high back-off (median of {react['rounds']}; "
        f"PSI trigger) | {onset * 1e3:.0f} ms (from the growth: "
        f"{react['median_from_growth'] * 1e3:.0f} ms) | < 1 s | {_met(onset < 1.0)} |",
        f"| cache + hot set ({cache['hot_mb']} MiB hot, {cache['cold_mb_total']} MiB cold "
        f"written): peak memory under memory_pressure vs unlimited | "
        f"{med['managed']['peak_bytes'] / 2**20:.0f} MiB vs "
        f"{med['unlimited']['peak_bytes'] / 2**20:.0f} MiB = {cache['peak_ratio']:.2f}x | "
        f"<= 0.50x | {_met(cache['peak_ratio'] <= 0.5)} |",
        f"| same, run time | {med['managed']['seconds']:.1f} s vs "
        f"{med['unlimited']['seconds']:.1f} s = {cache['time_ratio']:.2f}x | <= 1.05x | "
        f"{_met(cache['time_ratio'] <= 1.05)} |",
        "",
        "Each run (seconds / peak): " + _runs(cache["runs"]) + ". The machine is emulated "
        "(TCG): run times vary by tens of percent between identical runs, so the medians of "
        "interleaved runs are what is compared.",
        "",
    ]
    return lines


def _runs(runs: dict[str, list[dict[str, Any]]]) -> str:
    return "; ".join(
        kind
        + " "
        + ", ".join(f"{r['seconds']:.1f} s / {r['peak_bytes'] / 2**20:.0f} MiB" for r in rs)
        for kind, rs in runs.items()
    )
