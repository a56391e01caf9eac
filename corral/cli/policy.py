"""`corral policy check|plan|recommend`: validate a policy, show what it would change now on
this host, and print VPA-style recommendations from history.

``check`` exits 2 with every error ("FILE:LINE: field: bad value: allowed ...") on a bad
policy. ``plan`` polls the live cgroups twice about a second apart (rates need two samples),
runs the same Engine.decide the enforcer runs, and marks what enforce.safeguards.refusal
would refuse; nothing is written. ``recommend`` feeds a recording, or a live poll of
``--for`` seconds, to enforce.recommend (the VPA recommender).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from corral.cli.durations import parse_duration
from enforce.actions import Action, format_value
from enforce.controllers import fmt_bytes
from enforce.policy import Policy, PolicyError, load_policies
from enforce.policy.schema import Rule
from monitor.snapshot import Snapshot
from runtime.cgroupfs import CgroupError, CgroupFS


@click.group("policy")
def policy() -> None:
    """Check a policy, plan what it would change now, recommend limits."""


def _load(path: str, verb: str) -> Policy:
    try:
        return load_policies(path)
    except PolicyError as e:
        for line in e.errors:
            click.echo(f"corral policy {verb}: {line}", err=True)
        raise SystemExit(2) from None


def _selector(rule: Rule) -> str:
    sel = rule.select
    parts = [f"kind={sel.kind}"] if sel.kind else []
    parts += [f"name={sel.name}"] if sel.name else []
    parts += [f"cgroup={sel.cgroup}"] if sel.cgroup else []
    parts += [f"label {k}={v}" for k, v in sel.labels.items()]
    return ", ".join(parts) or "every cgroup"


@policy.command("check")
@click.argument("path", type=click.Path(exists=True))
def check(path: str) -> None:
    """Validate FILE (or every *.toml of DIR) and summarise its rules."""
    pol = _load(path, "check")
    s = pol.settings
    click.echo(
        f"{pol.source}: {len(pol.rules)} rule(s); managed root {s.managed_root or '/'!r}, "
        f"tick {s.tick_seconds:g} s, on exit {s.on_exit}"
    )
    for i, rule in enumerate(pol.rules, start=1):
        controllers = ", ".join(rule.controllers())
        click.echo(f"  {i}. {rule.name} [{rule.mode.value}] {_selector(rule)}: {controllers}")


def _poll_twice(gap: float, root: str | None) -> list[Snapshot]:
    from monitor.collector import Collector

    try:
        fs = CgroupFS(root) if root else CgroupFS.discover()
    except CgroupError as e:
        raise click.ClickException(str(e)) from None
    with Collector(fs) as collector:
        first = collector.poll()
        time.sleep(gap)
        return [first, collector.poll()]


def _row(action: Action, refused: str | None) -> dict[str, Any]:
    return {
        "rule": action.rule,
        "controller": action.controller,
        "cgroup": action.cgroup,
        "file": action.file,
        "old": format_value(action.old),
        "new": format_value(action.new),
        "mode": action.mode.value,
        "reason": action.reason,
        "inputs": dict(action.inputs),
        "refused": refused,
    }


@policy.command("plan")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change, in a list.")
@click.option("--cgroup-root", metavar="PATH", help="The cgroup2 mount (default: found).")
@click.option("--gap", default="1s", show_default=True, help="Time between the two polls.")
def plan(path: str, as_json: bool, cgroup_root: str | None, gap: str) -> None:
    """What the policy at PATH would change now on this host (nothing is written)."""
    from enforce.loop import own_cgroup

    pol = _load(path, "plan")
    seconds = parse_duration(gap, "--gap", high=60.0)
    history = _poll_twice(seconds, cgroup_root)
    rows, notes = plan_rows(pol, history, own_cgroup())
    if as_json:
        click.echo(json.dumps({"changes": rows, "notes": notes}, indent=2))
        return
    if not rows:
        click.echo(f"no changes: {len(history[-1].sample.cgroups)} cgroups polled")
    else:
        _table(rows)
    for note in notes:
        click.echo(f"note: {note}")


def plan_rows(
    pol: Policy, history: Sequence[Snapshot], own: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """What a fresh Engine decides on ``history``, each change with the safeguard refusal
    the actuator would log (None: it would be applied), and the engine's notes."""
    from enforce.engine import Engine
    from enforce.safeguards import refusal

    engine = Engine(pol)
    actions = engine.decide(history)
    rows = [_row(a, refusal(a, history[-1], pol.settings, own)) for a in actions]
    return rows, engine.notes()


def _table(rows: Sequence[dict[str, Any]]) -> None:
    heads = ("RULE", "CONTROLLER", "CGROUP", "FILE", "OLD", "NEW", "MODE", "WHY")
    cells = [
        (
            r["rule"],
            r["controller"],
            r["cgroup"],
            r["file"],
            r["old"] or "-",
            r["new"],
            r["mode"],
            f"REFUSED: {r['refused']}" if r["refused"] else r["reason"],
        )
        for r in rows
    ]
    _print_table(heads, cells)


def _print_table(heads: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads[:-1])]
    for line in [heads, *cells]:
        lead = "  ".join(str(v).ljust(w) for v, w in zip(line[:-1], widths, strict=True))
        click.echo(f"{lead}  {line[-1]}")


def _live(seconds: float, root: str | None) -> Iterator[Snapshot]:
    from monitor.collector import Collector

    try:
        fs = CgroupFS(root) if root else CgroupFS.discover()
    except CgroupError as e:
        raise click.ClickException(str(e)) from None
    end = time.monotonic() + seconds
    with Collector(fs) as collector:
        yield collector.poll()
        while time.monotonic() < end:
            time.sleep(min(1.0, max(end - time.monotonic(), 0.0)))
            yield collector.poll()


def _amount(value: float, unit: str) -> str:
    if math.isinf(value):
        return "inf"
    if unit == "bytes":
        return fmt_bytes(int(value))
    return f"{value:.3f}"


@policy.command("recommend")
@click.option("--recording", type=click.Path(exists=True, dir_okay=False), help="A recording.")
@click.option("--for", "duration", default="10s", show_default=True, help="Live poll time.")
@click.option("--half-life", default="24h", show_default=True, help="Histogram half-life.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of recommendations.")
@click.option("--cgroup-root", metavar="PATH", help="The cgroup2 mount (default: found).")
def recommend(
    recording: str | None, duration: str, half_life: str, as_json: bool, cgroup_root: str | None
) -> None:
    """VPA-style lower/target/upper memory and CPU per cgroup, from a recording or a live
    poll (VPA: p90 target + 15% margin, decaying histograms)."""
    from enforce.recommend import recommend as vpa

    half = parse_duration(half_life, "--half-life")
    if recording is not None:
        from monitor.recording import Recording, RecordingError

        try:
            with Recording(recording) as rec:
                recs = vpa(rec.snapshots(), half_life_seconds=half)
        except RecordingError as e:
            raise click.ClickException(str(e)) from None
    else:
        seconds = parse_duration(duration, "--for", high=86400.0)
        recs = vpa(_live(seconds, cgroup_root), half_life_seconds=half)
    if as_json:
        out = [
            {
                "cgroup": r.cgroup,
                "resource": r.resource,
                "lower": None if math.isinf(r.lower) else r.lower,
                "target": None if math.isinf(r.target) else r.target,
                "upper": None if math.isinf(r.upper) else r.upper,
                "unit": r.unit,
            }
            for r in recs
        ]
        click.echo(json.dumps(out, indent=2))
        return
    cells = [
        (r.cgroup or "/", r.resource, *(_amount(v, r.unit) for v in (r.lower, r.target, r.upper)))
        for r in recs
    ]
    if not cells:
        click.echo("no recommendations: no cgroup with samples")
        return
    _print_table(("CGROUP", "RESOURCE", "LOWER", "TARGET", "UPPER"), cells)
