"""The immutable whole-host Snapshot: one poll's raw sample, its model and its names.

A snapshot is built once per poll and replaced whole; readers (the exporter, the enforcer,
the dashboard) never see half a poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from monitor.model import CgroupModel, build_model
from monitor.sample import HostSample


@dataclass(frozen=True, slots=True)
class CgroupName:
    """Who a cgroup belongs to. kind: "container" (corral), "service", "scope", "slice"
    (systemd), "docker", "podman", "kubernetes", or "cgroup" (only the path is known).
    ``labels`` are the runtime's labels for a corral container; empty otherwise."""

    path: str
    kind: str
    name: str
    id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """``seq`` counts polls from 1; ``collect_seconds`` is how long the poll took."""

    seq: int
    sample: HostSample
    models: Mapping[str, CgroupModel]
    names: Mapping[str, CgroupName]
    collect_seconds: float


def build_snapshot(
    prev: HostSample | None,
    cur: HostSample,
    *,
    seq: int,
    names: Mapping[str, CgroupName],
    collect_seconds: float,
) -> Snapshot:
    """The snapshot of ``cur``: a model per cgroup, with rates against ``prev`` where the
    same cgroup was in it. Pure: the live collector and a recording's replay share it."""
    dt = None if prev is None else cur.monotonic - prev.monotonic
    before = prev.cgroups if prev is not None else {}
    models = {
        path: build_model(before.get(path), sample, dt) for path, sample in cur.cgroups.items()
    }
    return Snapshot(seq, cur, models, names, collect_seconds)
