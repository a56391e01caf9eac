"""Per-process detail of one cgroup for the dashboard (below's "zoom into processes").

The pids come from cgroup.procs (processes directly in the cgroup, or in its whole subtree
with ``recursive``); the rest from /proc through psutil. Any process may exit between the
listing and its /proc reads: it is then left out (or, as a zombie, shown with what /proc
still has). CPU is measured between two calls for the same process, as top does; the first
sight of a process has no CPU figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psutil

from runtime.cgroupfs import CgroupFS, CgroupGone

T = TypeVar("T")

# Processes not seen for this long are dropped from the CPU bookkeeping.
FORGET_AFTER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process. ``cpu_percent``: CPU time used per wall time since the previous call
    that saw it, in percent of one core (200.0 = two cores); None on first sight.
    ``command``: the command line, or "[name]" when it has none (kernel threads, zombies)."""

    pid: int
    cgroup: str
    ppid: int | None
    user: str | None
    command: str
    rss_bytes: int | None
    cpu_percent: float | None
    state: str
    threads: int | None


class ProcessSampler:
    """Keeps the CPU times of the processes it saw, to give CPU percent on the next call.
    Not thread-safe: one per dashboard view."""

    def __init__(self, fs: CgroupFS) -> None:
        self.fs = fs
        # (pid, create_time) -> (CPU seconds, monotonic seconds) at the last sight
        self._seen: dict[tuple[int, float], tuple[float, float]] = {}

    def sample(self, cgroup: str, *, recursive: bool = False) -> list[ProcessInfo]:
        """The processes of ``cgroup`` by pid; [] when the cgroup is gone."""
        out: list[ProcessInfo] = []
        now = time.monotonic()
        for where, pid in self._pids(cgroup, recursive):
            info = self._one(pid, where, now)
            if info is not None:
                out.append(info)
        self._seen = {k: v for k, v in self._seen.items() if now - v[1] < FORGET_AFTER_SECONDS}
        return sorted(out, key=lambda p: p.pid)

    def _pids(self, cgroup: str, recursive: bool) -> list[tuple[str, int]]:
        cgroups = self.fs.walk(cgroup) if recursive else iter([cgroup])
        out: list[tuple[str, int]] = []
        try:
            for where in cgroups:
                try:
                    out.extend((where, pid) for pid in self.fs.procs(where))
                except CgroupGone:
                    continue  # removed while being listed
        except CgroupGone:
            pass
        return out

    def _one(self, pid: int, cgroup: str, now: float) -> ProcessInfo | None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                return self._read(proc, cgroup, now)
        except psutil.ZombieProcess:
            return ProcessInfo(pid, cgroup, None, None, "", None, None, "zombie", None)
        except psutil.NoSuchProcess:
            return None  # exited between cgroup.procs and /proc

    def _read(self, proc: psutil.Process, cgroup: str, now: float) -> ProcessInfo:
        name = proc.name()
        cmdline = _or_none(proc.cmdline)
        times = _or_none(proc.cpu_times)
        memory = _or_none(proc.memory_info)
        cpu = None
        if times is not None:
            used = times.user + times.system
            key = (proc.pid, proc.create_time())
            last = self._seen.get(key)
            if last is not None and now > last[1]:
                cpu = 100.0 * (used - last[0]) / (now - last[1])
            self._seen[key] = (used, now)
        return ProcessInfo(
            pid=proc.pid,
            cgroup=cgroup,
            ppid=_or_none(proc.ppid),
            user=_or_none(proc.username),
            command=" ".join(cmdline) if cmdline else f"[{name}]",
            rss_bytes=memory.rss if memory is not None else None,
            cpu_percent=cpu,
            state=proc.status(),
            threads=_or_none(proc.num_threads),
        )


def _or_none(read: Callable[[], T]) -> T | None:
    """``read()``, or None where /proc denies it (another user's process without root)."""
    try:
        return read()
    except psutil.AccessDenied:
        return None
