"""The headless demo's summary: what the agent at a URL says about the demo containers.

``collect`` reads the agent's HTTP endpoints once at the end of the demo: the last polls
(/api/v1/history: the figures are rates over those polls, rebuilt with the monitor's own
model, as `corral top --url` does), every enforcer action (/api/v1/audit) and one scrape of
/metrics (its series are counted, as Prometheus would ingest them). ``format_summary`` is
pure: it turns what was captured into the text printed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.demo.workloads import NAMES
from monitor.exporter.api import decode_sample, decode_snapshot
from monitor.snapshot import Snapshot
from runtime.cgroupfs.formats import MAX

WINDOW = 10  # polls the figures are averaged over (the policy's tick is 1 s)
MiB = 1 << 20


class SummaryError(Exception):
    """The agent did not answer, or answered something that is not its API."""


@dataclass(frozen=True)
class Captured:
    """The agent's answers, as JSON and text: the input of format_summary."""

    url: str
    history: Mapping[str, Any]  # /api/v1/history
    audit: Mapping[str, Any]  # /api/v1/audit?after=0
    metrics: str  # /metrics


def fetch(url: str, timeout: float = 10.0) -> bytes:
    """GET ``url``; SummaryError names it when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body
    except OSError as e:
        raise SummaryError(f"GET {url}: {e}") from None


def collect(url: str) -> Captured:
    """Read the agent at ``url`` (http://HOST:PORT) once."""
    base = url.rstrip("/")
    try:
        history = json.loads(fetch(f"{base}/api/v1/history?after=0&limit={WINDOW}"))
        audit = json.loads(fetch(f"{base}/api/v1/audit?after=0"))
    except ValueError as e:
        raise SummaryError(f"{base}/api/v1: not JSON: {e}") from None
    metrics = fetch(f"{base}/metrics").decode("utf-8", "replace")
    return Captured(base, history, audit, metrics)


def latest(history: Mapping[str, Any]) -> Snapshot:
    """The newest snapshot, its rates taken over the oldest poll of ``history``."""
    snaps = history.get("snapshots") or []
    if not snaps:
        raise SummaryError("the agent's history holds no poll yet")
    prev = decode_sample(snaps[0]) if len(snaps) > 1 else None
    return decode_snapshot(snaps[-1], prev)


def series_counts(metrics: str, cgroups: Iterable[str]) -> tuple[int, int]:
    """(every series, those of ``cgroups``) of a text exposition: its sample lines, and
    those whose cgroup label is one of ``cgroups``."""
    lines = [ln for ln in metrics.splitlines() if ln and not ln.startswith("#")]
    labels = tuple(f'cgroup="{c}"' for c in cgroups)
    return len(lines), sum(1 for ln in lines if any(label in ln for label in labels))


def _size(value: object) -> str:
    if value is None:
        return "-"
    if value is MAX:
        return "max"
    assert isinstance(value, int)
    return f"{value / MiB:.1f}M" if value < 10 * MiB else f"{value / MiB:.0f}M"


def container_lines(snapshot: Snapshot) -> list[str]:
    """One line per demo container: CPU, memory, pids and io figures beside their limits."""
    by_name = {n.name: path for path, n in snapshot.names.items() if n.kind == "container"}
    out = []
    for name in NAMES:
        path = by_name.get(name)
        sample = snapshot.sample.cgroups.get(path) if path else None
        if path is None or sample is None:
            out.append(f"  {name:18} not found at the end (its cgroup is gone)")
            continue
        model, lim = snapshot.models.get(path), sample.limits
        cores = model.cpu_cores if model and model.cpu_cores is not None else 0.0
        quota = lim.cpu_max.cores if lim.cpu_max is not None else None
        populated = sample.events.populated if sample.events is not None else True
        refused = sample.pids_events.max if sample.pids_events is not None else 0
        wbytes = sum(s.wbytes for s in (sample.io or {}).values())
        wrate = model.io_write_bytes_per_second if model else None
        ooms = sample.memory_events.oom_kill if sample.memory_events is not None else 0
        out.append(
            f"  {name:18} {'running' if populated else 'stopped':7}"
            f"  cpu {cores:4.2f}/{'max' if quota is None else f'{quota:g}'}"
            f"  mem {_size(sample.memory_current)} high {_size(lim.memory_high)}"
            f" max {_size(lim.memory_max)}"
            f"  pids {sample.pids_current if sample.pids_current is not None else '-'}"
            f"/{'max' if lim.pids_max in (None, MAX) else lim.pids_max}"
            f" refused {refused}"
            f"  io written {_size(wbytes)} ({(wrate or 0) / MiB:.1f}M/s)"
            f"  oom_kill {ooms}"
        )
    return out


def action_lines(entries: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> list[str]:
    """One line per audit entry: time, container, controller, file, old -> new, outcome,
    reason. ``names`` maps cgroup paths to container names."""
    out = []
    for e in sorted(entries, key=lambda e: float(e.get("time", 0))):
        stamp = _clock(float(e.get("time", 0)))
        who = names.get(str(e.get("cgroup")), str(e.get("cgroup")))
        out.append(
            f"  {stamp} {who:18} {e.get('controller', '?'):15} {e.get('file', '?')}"
            f" {_shown(e.get('old'))} -> {_shown(e.get('new'))} [{e.get('outcome', '?')}]"
            f" {e.get('reason', '')}"
        )
    return out


def _clock(unix: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(unix))


def format_summary(captured: Captured, notes: Sequence[str] = ()) -> str:
    """The text printed at the end of a headless demo."""
    snapshot = latest(captured.history)
    names = {p: n.name for p, n in snapshot.names.items() if n.kind == "container"}
    entries = list(captured.audit.get("entries") or [])
    demo = [p for p, name in names.items() if name in NAMES]
    total, mine = series_counts(captured.metrics, demo)
    lines = ["corral demo: containers (figures over the last polls; limits as set now)"]
    lines += container_lines(snapshot)
    lines.append(f"corral demo: {len(entries)} enforcer action(s) (UTC)")
    lines += action_lines(entries, names) or ["  none"]
    quiet = [n for n in NAMES if n not in {names.get(str(e.get("cgroup"))) for e in entries}]
    if quiet:
        lines.append(f"corral demo: no action on {', '.join(quiet)}")
    lines += [f"corral demo: note: {n}" for n in notes]
    lines.append(
        f"corral demo: scraped {captured.url}/metrics: {total} series, {mine} of them for the "
        f"demo containers; JSON from {captured.url}/api/v1/history and /api/v1/audit"
    )
    return "\n".join(lines)


def _shown(value: Any) -> str:
    """An audit value as written; "-" for none (a write-only file such as cgroup.kill)."""
    return "-" if value is None else str(value)
