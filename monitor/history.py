"""A bounded in-memory ring of Snapshots for the dashboard's plots and the enforcer.

Bounded three ways, whichever bites first: a number of snapshots, an age (seconds of
CLOCK_MONOTONIC between a snapshot and the newest one), and a number of cgroup samples summed
over the snapshots, which is what memory grows with (a host with 1,000 cgroups fills it 1,000
times faster than one with 1). The newest snapshot is always kept.

Memory: consecutive samples share every object that did not change (see monitor.collector).
Measured on the captured 6.1 tree, a cgroup sample held here costs about 0.7 KiB (with its
model) when nothing changed since the previous poll and about 8.5 KiB when every counter did
(memory.stat's mapping of some 55 figures is half of it). The default bound of 10,000 cgroup
samples therefore holds 7-85 MiB: 10 polls of 1,000 cgroups, 100 of 100; raise it for long
plots of many cgroups.

Thread-safe: the poller appends while the dashboard and the enforcer read. Readers get
Snapshots, which are immutable, in lists of their own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from monitor.model import CgroupModel
from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot

DEFAULT_MAX_SNAPSHOTS = 900  # 15 minutes at one poll a second
DEFAULT_MAX_CGROUP_SAMPLES = 10_000

_MODEL_FIELDS = frozenset(f.name for f in fields(CgroupModel))
_SAMPLE_FIELDS = frozenset(f.name for f in fields(CgroupSample))


class History:
    """The most recent Snapshots, oldest first."""

    def __init__(
        self,
        max_snapshots: int = DEFAULT_MAX_SNAPSHOTS,
        max_age_seconds: float | None = None,
        max_cgroup_samples: int | None = DEFAULT_MAX_CGROUP_SAMPLES,
    ) -> None:
        if max_snapshots < 1:
            raise ValueError(f"max_snapshots {max_snapshots}: expected at least 1")
        if max_age_seconds is not None and max_age_seconds < 0:
            raise ValueError(f"max_age_seconds {max_age_seconds}: expected None or >= 0")
        if max_cgroup_samples is not None and max_cgroup_samples < 1:
            raise ValueError(f"max_cgroup_samples {max_cgroup_samples}: expected None or >= 1")
        self.max_snapshots = max_snapshots
        self.max_age_seconds = max_age_seconds
        self.max_cgroup_samples = max_cgroup_samples
        self._ring: deque[Snapshot] = deque()
        self._cgroup_samples = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def cgroup_samples(self) -> int:
        """Cgroup samples held, summed over the snapshots."""
        return self._cgroup_samples

    def append(self, snapshot: Snapshot) -> None:
        """Add the newest snapshot, dropping the oldest ones beyond the bounds."""
        with self._lock:
            self._ring.append(snapshot)
            self._cgroup_samples += len(snapshot.sample.cgroups)
            self._trim()

    def _trim(self) -> None:
        ring, newest = self._ring, self._ring[-1].sample.monotonic
        while len(ring) > 1 and (
            len(ring) > self.max_snapshots
            or (
                self.max_age_seconds is not None
                and newest - ring[0].sample.monotonic > self.max_age_seconds
            )
            or (
                self.max_cgroup_samples is not None
                and self._cgroup_samples > self.max_cgroup_samples
            )
        ):
            self._cgroup_samples -= len(ring.popleft().sample.cgroups)

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._ring[-1] if self._ring else None

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot held, oldest first."""
        with self._lock:
            return list(self._ring)

    def window(self, seconds: float) -> list[Snapshot]:
        """The snapshots no more than ``seconds`` older than the newest, oldest first."""
        with self._lock:
            if not self._ring:
                return []
            since = self._ring[-1].sample.monotonic - seconds
            return [s for s in self._ring if s.sample.monotonic >= since]

    def series(
        self, path: str, field: str, seconds: float | None = None
    ) -> list[tuple[float, Any]]:
        """(wall time, value) of one figure of one cgroup, oldest first, over the snapshots
        (of the last ``seconds``) that hold the cgroup; a value is None where not known.

        ``field`` names a CgroupModel field ("cpu_cores", "working_set_bytes") or a
        CgroupSample field, with dotted steps into mappings and records:
        "memory_current", "memory_stat.anon", "pressure.memory.some.total_usec",
        "limits.memory_high", "memory_events.oom_kill".
        """
        steps = field.split(".")
        if steps[0] not in _MODEL_FIELDS and steps[0] not in _SAMPLE_FIELDS:
            raise ValueError(
                f"series field {field!r}: {steps[0]!r} is neither a CgroupModel nor a "
                f"CgroupSample field ({', '.join(sorted(_MODEL_FIELDS | _SAMPLE_FIELDS))})"
            )
        from_model = steps[0] in _MODEL_FIELDS
        snaps = self.snapshots() if seconds is None else self.window(seconds)
        out: list[tuple[float, Any]] = []
        for snap in snaps:
            record = (snap.models if from_model else snap.sample.cgroups).get(path)
            if record is not None:
                out.append((snap.sample.wall_time, _lookup(record, steps)))
        return out


def _lookup(value: Any, steps: list[str]) -> Any:
    for step in steps:
        if value is None:
            return None
        value = value.get(step) if isinstance(value, Mapping) else getattr(value, step, None)
    return value
