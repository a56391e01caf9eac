"""The immutable whole-host Snapshot: one poll's raw sample, its model and its names.

A snapshot is built once per poll and replaced whole; readers (the exporter, the enforcer,
the dashboard) never see half a poll.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from monitor.model import CgroupModel, build_model
from monitor.sample import CgroupSample, HostSample


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
    return Snapshot(seq, cur, Models(before, cur.cgroups, dt), names, collect_seconds)


class Models(Mapping[str, CgroupModel]):
    """Each cgroup's model, built the first time it is asked for: the exporter serves raw
    samples only, so an agent with no enforcer or dashboard reading models never pays for
    them (a quarter of a poll's CPU). Read-only to its users; safe to read from several
    threads (a model built twice at once is the same value). Once every model is built the
    previous poll's samples are let go."""

    __slots__ = ("_before", "_built", "_cur", "_dt")

    def __init__(
        self,
        before: Mapping[str, CgroupSample],
        cur: Mapping[str, CgroupSample],
        dt: float | None,
    ) -> None:
        self._before: Mapping[str, CgroupSample] | None = before
        self._cur = cur
        self._dt = dt
        self._built: dict[str, CgroupModel] = {}

    def __getitem__(self, path: str) -> CgroupModel:
        model = self._built.get(path)
        if model is not None:
            return model
        before = self._before
        if before is None:  # every model was built meanwhile (by another thread)
            return self._built[path]
        sample = self._cur[path]  # KeyError for a cgroup the poll did not read
        model = self._built.setdefault(path, build_model(before.get(path), sample, self._dt))
        if len(self._built) == len(self._cur):
            self._before = None
        return model

    def __iter__(self) -> Iterator[str]:
        return iter(self._cur)

    def __len__(self) -> int:
        return len(self._cur)

    def __contains__(self, path: object) -> bool:
        return path in self._cur
