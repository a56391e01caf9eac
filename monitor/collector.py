"""The collector: each poll reads every file monitor/sample.py lists, for every discovered
cgroup, into one immutable HostSample, and builds that poll's Snapshot.

Files are read through kept-open fds with pread (runtime.cgroupfs.openfiles): about 1 us a
file instead of 5, and an unchanged file's text is not parsed again; the parsed object, and
a whole CgroupSample whose every figure is unchanged, is the previous poll's very object, so
idle cgroups cost little time and, in the history, little memory.

Errors never raise out of a poll; they are counted in ``HostSample.errors`` by kind:
``gone`` a cgroup vanished while it was read (dropped from this sample: a normal event),
``parse`` a file's text did not parse (that figure is None), ``read`` any other failed read
(that figure is None), ``discovery`` a directory that could not be listed, ``internal`` a
bug (logged with its traceback). Each distinct message is logged once.

Files read only when they can have changed: each polled cgroup's directory is watched with
inotify (runtime.cgroupfs.watch), and a poll first drains what changed since the last one.

- Limits (LIMITS) change only by a write(2), which the watch reports by file name; they are
  re-read when one of them was written, else the previous poll's Limits object is kept.
- The event files (EVENTS: cgroup.events, memory.events, pids.events) are re-read when the
  kernel notified a change (kernfs_notify); that notice is only trusted while the file is
  read through a kept fd, so a file past the fd bound is read every poll.
- The files that say which others exist (WITNESSES) are re-read when written or when the
  parent's cgroup.subtree_control was.

A write through a cgroup2 mount of another cgroup namespace (a container's own
/sys/fs/cgroup) raises no notification here, and a notification can arrive just after the
poll it belongs to; so every ``recheck_every`` polls (staggered across cgroups) a cgroup's
files are all re-read whatever the watch said, which bounds how stale such a change can be.
A cgroup that cannot be watched (fs.inotify.max_user_watches reached), and every cgroup after
the event queue overflowed, is read in full. ``limits_changed(path)`` forces a full read at
the next poll. With inotify unavailable every file is read every poll.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields, replace
from operator import attrgetter, is_
from typing import Any

from monitor.discovery import Discovery
from monitor.naming import Namer
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import Snapshot, build_snapshot
from runtime.cgroupfs import CgroupFS, CgroupGone, ParseError, normalize
from runtime.cgroupfs.core import parse_cgroup_events
from runtime.cgroupfs.cpu import parse_cpu_max, parse_cpu_stat
from runtime.cgroupfs.formats import parse_int, parse_int_or_max
from runtime.cgroupfs.io import parse_io_max, parse_io_stat
from runtime.cgroupfs.memory import parse_memory_events, parse_memory_stat
from runtime.cgroupfs.openfiles import DEFAULT_FD_LIMIT, OpenFiles
from runtime.cgroupfs.pids import parse_pids_events
from runtime.cgroupfs.pressure import Pressure, parse_pressure
from runtime.cgroupfs.watch import Changes, ChangeWatch

log = logging.getLogger(__name__)

Table = tuple[tuple[str, str, Callable[[str, str], Any]], ...]


def count_procs(text: str, source: str = "cgroup.procs") -> int:
    """cgroup.procs: one pid per line, each ended by a newline."""
    return text.count("\n")


# (kernel file, CgroupSample field, parser), read every poll.
STATS: Table = (
    ("cpu.stat", "cpu", parse_cpu_stat),
    ("memory.current", "memory_current", parse_int),
    ("memory.peak", "memory_peak", parse_int),
    ("memory.stat", "memory_stat", parse_memory_stat),
    ("memory.swap.current", "swap_current", parse_int),
    ("io.stat", "io", parse_io_stat),
    ("pids.current", "pids_current", parse_int),
    ("cgroup.procs", "nr_procs", count_procs),
)
# Read when kernfs_notify says they changed (see the module docstring).
EVENTS: Table = (
    ("memory.events", "memory_events", parse_memory_events),
    ("pids.events", "pids_events", parse_pids_events),
    ("cgroup.events", "events", parse_cgroup_events),
)
PRESSURE: Table = tuple((f"{r}.pressure", r, parse_pressure) for r in ("cpu", "memory", "io"))
LIMITS: Table = (
    ("cpu.max", "cpu_max", parse_cpu_max),
    ("cpu.weight", "cpu_weight", parse_int),
    ("memory.min", "memory_min", parse_int_or_max),
    ("memory.low", "memory_low", parse_int_or_max),
    ("memory.high", "memory_high", parse_int_or_max),
    ("memory.max", "memory_max", parse_int_or_max),
    ("memory.swap.max", "swap_max", parse_int_or_max),
    ("io.max", "io_max", parse_io_max),
    ("pids.max", "pids_max", parse_int_or_max),
)
# The files whose text decides which of the others a cgroup has (see OpenFiles.refresh_absent).
WITNESSES = ("cgroup.controllers", "cgroup.pressure")
LIMIT_FILES = frozenset(name for name, _, _ in LIMITS)
# Read every poll, in one pass; the pressure files under keys apart from the fields.
HOT: Table = (*STATS, *((name, f"pressure {r}", parse) for name, r, parse in PRESSURE))
_RESOURCES = tuple((f"pressure {r}", r) for _, r, _ in PRESSURE)
_EVENT_FILES = tuple(name for name, _, _ in EVENTS)
_EVENT_FIELDS = tuple(field for _, field, _ in EVENTS)
DEFAULT_RECHECK_EVERY = 30

_STAT_FIELDS = tuple(field for _, field, _ in (*STATS, *EVENTS))
_LIMIT_FIELDS = tuple(f.name for f in fields(Limits))
_stat_values = attrgetter(*_STAT_FIELDS)
_limit_values = attrgetter(*_LIMIT_FIELDS)
_MAX_LOGGED = 100


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """What to collect: see monitor.discovery for the globs, the module docstring for
    ``recheck_every`` (1: read every file every poll, as without inotify; ``watch=False``
    does that too). ``fd_limit`` bounds the kept-open fds (clipped to RLIMIT_NOFILE)."""

    subtree: str = ""
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    max_depth: int | None = None
    fd_limit: int = DEFAULT_FD_LIMIT
    recheck_every: int = DEFAULT_RECHECK_EVERY
    watch: bool = True

    def __post_init__(self) -> None:
        if self.recheck_every < 1:
            raise ValueError(f"recheck_every {self.recheck_every}: expected a poll count >= 1")
        if self.fd_limit < 0:
            raise ValueError(f"fd_limit {self.fd_limit}: expected a count >= 0")
        if self.max_depth is not None and self.max_depth < 0:
            raise ValueError(f"max_depth {self.max_depth}: expected None or a depth >= 0")
        normalize(self.subtree)  # raises InvalidPath naming it


class Collector:
    """Polls the cgroups ``config`` selects. ``poll()`` is called from one poller thread
    (a lock makes a stray concurrent call wait); the Snapshots it returns are shared."""

    def __init__(
        self, fs: CgroupFS, config: CollectorConfig | None = None, namer: Namer | None = None
    ) -> None:
        self.fs = fs
        self.config = c = config if config is not None else CollectorConfig()
        self.namer = namer if namer is not None else Namer()
        self._files = OpenFiles(fs.root, c.fd_limit)
        self._discovery = Discovery(
            fs, c.subtree, c.include, c.exclude, c.max_depth, files=self._files
        )
        self._watch = _change_watch(fs.root) if c.watch and c.recheck_every > 1 else None
        self._lock = threading.Lock()
        self._prev: HostSample | None = None
        self._inodes: dict[str, int] = {}
        self._recreated: frozenset[str] = frozenset()
        self._stale: set[str] = set()  # cgroups to read in full at the next poll
        self._stagger: dict[str, int] = {}  # path -> its offset in the recheck cycle
        self._logged: set[str] = set()
        self._seq = 0  # snapshots made
        self._reads = 0  # samples read (by poll or read_sample)
        self._closed = False

    @property
    def open_fds(self) -> int:
        """fds held open right now (at most ``fd_bound``)."""
        return self._files.open_count

    @property
    def fd_bound(self) -> int:
        """The bound in force: ``config.fd_limit`` clipped to RLIMIT_NOFILE."""
        return self._files.limit

    @property
    def opens(self) -> int:
        """open(2) calls made so far for the files read every poll; it stops growing once
        every one of them is kept open. (Limit and witness files, read when the watch says
        they changed, are opened and closed each time: ``opens_on_demand``.)"""
        return self._files.opens

    @property
    def opens_on_demand(self) -> int:
        return self._files.opens_on_demand

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every fd. Polling a closed collector is a programming error."""
        with self._lock:
            self._files.close()
            if self._watch is not None:
                self._watch.close()
            self._closed = True

    @property
    def watched(self) -> int:
        """How many cgroup directories the change watch holds (0 without inotify)."""
        return 0 if self._watch is None else len(self._watch)

    def limits_changed(self, path: str) -> None:
        """Read every file of ``path`` at the next poll, whatever the watch says (a writer
        that knows it changed a limit through another mount calls it)."""
        self._stale.add(normalize(path))

    def poll(self) -> Snapshot:
        """Read a sample, name its cgroups and model it against the previous one."""
        with self._lock:
            start = time.perf_counter()
            prev = self._prev
            cur = self._read_sample()
            if prev is not None and self._recreated:
                # Same path, new cgroup: its counters restarted, so no rate against the old.
                kept = {p: s for p, s in prev.cgroups.items() if p not in self._recreated}
                prev = replace(prev, cgroups=kept)
            names = self.namer.names(cur.cgroups)
            self._seq += 1
            snap = build_snapshot(prev, cur, seq=self._seq, names=names, collect_seconds=0.0)
            return replace(snap, collect_seconds=time.perf_counter() - start)

    def read_sample(self) -> HostSample:
        """One poll's raw sample (it also becomes the previous sample for ``poll``)."""
        with self._lock:
            return self._read_sample()

    # -- one poll ----------------------------------------------------------------------------

    def _read_sample(self) -> HostSample:
        if self._closed:
            raise RuntimeError("this Collector is closed")
        errors: Counter[str] = Counter()
        before_errors = self._discovery.errors
        # Drained before discovery, so a cgroup made after this point is seen next poll.
        changes = self._watch.drain() if self._watch is not None else None
        paths = self._discovery.poll(self._settled(changes))
        errors["discovery"] += self._discovery.errors - before_errors
        inodes = dict(self._discovery.inodes)
        recreated = {p for p, ino in inodes.items() if self._inodes.get(p, ino) != ino}
        for path in recreated:
            self._files.forget(path)
        self._files.retain(inodes)
        self._watch_new(paths, recreated)
        if len(self._stagger) > 2 * len(inodes) + 64:  # churn: forget paths long gone
            self._stagger = {p: n for p, n in self._stagger.items() if p in inodes}
        prev = self._prev.cgroups if self._prev is not None else {}
        # The sample's instant: just before the first read. Every poll reads the cgroups in
        # the same order, so a cgroup's offset from it is about the same each poll and
        # cancels out of its rates.
        wall, mono = time.time(), time.monotonic()
        cgroups: dict[str, CgroupSample] = {}
        for path in paths:
            before = None if path in recreated else prev.get(path)
            sample = self._read_one(path, before, self._changed(path, before, changes), errors)
            if sample is not None:
                cgroups[path] = sample
        self._stale.clear()
        self._inodes, self._recreated = inodes, frozenset(recreated)
        self._reads += 1
        self._prev = HostSample(wall, mono, cgroups, {k: n for k, n in errors.items() if n})
        return self._prev

    def _settled(self, changes: Changes | None) -> Callable[[str], bool] | None:
        """For discovery: whether a cgroup's children are known not to have changed."""
        watch = self._watch
        if watch is None or changes is None or changes.overflowed:
            return None
        moved = changes.children
        return lambda path: (
            watch.watching(path) and path not in moved and not self._recheck_due(path)
        )

    def _watch_new(self, paths: list[str], recreated: set[str]) -> None:
        """Watch the cgroups this poll found first (before their first read, so no change
        to them can be missed) and drop the ones gone."""
        watch = self._watch
        if watch is None:
            return
        watch.retain(paths)
        for path in paths:
            if path in recreated or not watch.watching(path):
                watch.watch(path)

    def _every_poll(self, path: str, witnesses: bool) -> bool:
        """Whether ``path``'s limit files (or witness files) are read every poll, and so
        worth an fd: without a watch on the cgroup (or, for the witnesses, on its parent,
        whose cgroup.subtree_control decides them)."""
        watch = self._watch
        if watch is None or not watch.watching(path):
            return True
        parent = _parent(path)
        return witnesses and parent is not None and not watch.watching(parent)

    def _recheck_due(self, path: str) -> bool:
        """Every ``recheck_every`` polls, staggered across cgroups by a hash of the path."""
        stagger = self._stagger.get(path)
        if stagger is None:
            stagger = self._stagger[path] = zlib.crc32(path.encode("utf-8", "surrogateescape"))
        return (self._reads + stagger) % self.config.recheck_every == 0

    def _changed(
        self, path: str, before: CgroupSample | None, changes: Changes | None
    ) -> Changed | None:
        """What may have changed in ``path`` since ``before``; None means anything may have,
        so every file is read."""
        watch = self._watch
        if (
            watch is None
            or changes is None
            or changes.overflowed
            or before is None
            or path in self._stale
            or not watch.watching(path)
        ):
            return None
        if self._recheck_due(path):
            return None
        parent = _parent(path)
        mine = changes.files.get(path)
        if parent is None or not watch.watching(parent):
            return Changed(frozenset() if mine is None else mine, True)
        parent_controls = "cgroup.subtree_control" in changes.of(parent)
        if mine is None and not parent_controls:
            return QUIET  # the common case: no allocation
        return Changed(frozenset() if mine is None else mine, parent_controls)

    def _read_one(
        self,
        path: str,
        before: CgroupSample | None,
        changed: Changed | None,
        errors: Counter[str],
    ) -> CgroupSample | None:
        try:
            return self._read_cgroup(path, before, changed, errors)
        except CgroupGone:
            errors["gone"] += 1
        except Exception as e:
            errors["internal"] += 1
            if self._first(f"internal {path} {e!r}"):
                log.exception("collector: reading cgroup %r failed", path)
        return None

    def _read_cgroup(
        self,
        path: str,
        before: CgroupSample | None,
        changed: Changed | None,
        errors: Counter[str],
    ) -> CgroupSample:
        quiet = changed is QUIET and before is not None
        if not quiet and (
            changed is None or changed.parent_controls or not changed.files.isdisjoint(WITNESSES)
        ):
            self._files.refresh_absent(path, WITNESSES, keep=self._every_poll(path, True))
        stats = self._table(path, HOT, errors)
        pressure: Mapping[str, Pressure] = {r: stats.pop(k) for k, r in _RESOURCES if k in stats}
        if quiet and self._files.all_open(path, _EVENT_FILES):
            assert before is not None
            for field in _EVENT_FIELDS:
                value = getattr(before, field)
                if value is not None:
                    stats[field] = value
        else:
            self._events(path, before, changed, stats, errors)
        if before is not None and changed is not None and changed.files.isdisjoint(LIMIT_FILES):
            limits = before.limits
        else:
            limits = self._limits(path, before, errors)
        if before is not None:
            if pressure.keys() == before.pressure.keys() and _same(pressure, before.pressure):
                pressure = before.pressure
            if (
                limits is before.limits
                and pressure is before.pressure
                and _same_fields(stats, _stat_values(before), _STAT_FIELDS)
            ):
                return before  # nothing changed: share the previous poll's object
        return CgroupSample(path=path, pressure=pressure, limits=limits, **stats)

    def _events(
        self,
        path: str,
        before: CgroupSample | None,
        changed: Changed | None,
        out: dict[str, Any],
        errors: Counter[str],
    ) -> None:
        """Add EVENTS' fields to ``out``: read when notified, else the previous poll's."""
        if before is None or changed is None:
            out.update(self._table(path, EVENTS, errors))
            return
        is_open = self._files.is_open
        for row in EVENTS:
            name, field, _ = row
            if name in changed.files or not is_open(path, name):
                out.update(self._table(path, (row,), errors))
            else:
                value = getattr(before, field)
                if value is not None:
                    out[field] = value

    def _limits(self, path: str, before: CgroupSample | None, errors: Counter[str]) -> Limits:
        values = self._table(path, LIMITS, errors, keep=self._every_poll(path, False))
        if before is not None and _same_fields(values, _limit_values(before.limits), _LIMIT_FIELDS):
            return before.limits
        return Limits(**values)

    def _table(
        self, path: str, table: Table, errors: Counter[str], keep: bool = True
    ) -> dict[str, Any]:
        """field -> parsed value for each file of ``table`` that ``path`` has."""
        out, problems = self._files.parsed_table(path, table, keep)
        for problem in problems:
            self._count(errors, "parse" if isinstance(problem, ParseError) else "read", problem)
        return out

    def _count(self, errors: Counter[str], kind: str, error: Exception) -> None:
        errors[kind] += 1
        if self._first(f"{kind} {error}"):
            log.warning("collector: %s error: %s", kind, error)

    def _first(self, message: str) -> bool:
        """True the first time ``message`` is seen (bounded, so logs cannot flood)."""
        if message in self._logged or len(self._logged) >= _MAX_LOGGED:
            return False
        self._logged.add(message)
        return True


@dataclass(frozen=True, slots=True)
class Changed:
    """What the watch reported for one cgroup since the last poll: the names of its files
    written or notified, and whether its parent's cgroup.subtree_control was written (or
    the parent is not watched), which can add or remove files of this cgroup."""

    files: AbstractSet[str]
    parent_controls: bool


QUIET = Changed(frozenset(), False)  # nothing reported for the cgroup nor its parent


def _parent(path: str) -> str | None:
    """The parent cgroup's path ("" for the root's children), None for the root."""
    if not path:
        return None
    return path.rpartition("/")[0]


def _change_watch(root: str | os.PathLike[str]) -> ChangeWatch | None:
    try:
        return ChangeWatch(root)
    except OSError as e:  # EMFILE: fs.inotify.max_user_instances reached
        log.warning("collector: no inotify (%s); every file is read every poll", e)
        return None


def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Every value of ``new`` is the very object ``old`` holds under the same key."""
    return all(old.get(k) is v for k, v in new.items())


def _same_fields(values: dict[str, Any], old: tuple[Any, ...], names: tuple[str, ...]) -> bool:
    """``old`` (the fields ``names`` of the previous record) are exactly ``values``, by
    identity; a field absent from ``values`` is None."""
    return all(map(is_, old, map(values.get, names)))
