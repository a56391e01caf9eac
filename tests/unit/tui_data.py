"""Deterministic dashboard data for the TUI tests: a small cgroup tree, containers with limits,
the enforcer's audit entries, and Sources that hand them out without a kernel or a clock.

The tree (paths relative to the cgroup2 root; "" is the root itself):

    ""                                   root, no limits
    system.slice                         slice
    system.slice/sshd.service            service
    system.slice/cron.service            service
    corral                               cgroup (corral's parent)
    corral/web                           container: cpu.max 0.5 cores, memory.high 512Mi,
                                         memory.max 1Gi, pids.max 100; throttled
    corral/db                            container: cpu.max max, memory.max 2Gi, pids.max max
    corral/batch                         container: cpu.max 2 cores, memory.high 256Mi (above
                                         it: memory PSI), io heavy, pids.max 32
    user.slice                           slice
    user.slice/user-1000.slice           slice

Step ``i`` of the fixture advances every counter by a fixed amount per cgroup, so a frame's
figures are the same on every run (wall time starts at FIRST_WALL, one second a step).
Others may add helpers at the end of this file.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from dashboards.tui.sources.base import CannotSeek, Frame, ProcessRow, SourceDisconnected
from enforce.actions import AuditEntry, Mode, Outcome
from monitor.sample import CgroupSample, HostSample, Limits
from monitor.snapshot import CgroupName, Snapshot, build_snapshot
from runtime.cgroupfs.cpu import CpuMax, CpuStat
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoStat
from runtime.cgroupfs.pressure import Pressure, PressureLine

FIRST_WALL = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
FIRST_MONOTONIC = 1000.0
MI = 1 << 20
GI = 1 << 30
DISK = Device(8, 0)


@dataclass(frozen=True)
class _Spec:
    """One cgroup of the fixture: its name, limits and per-second rates.

    cpu: cores busy; mem: memory.current bytes (inactive_file is a quarter of it); rd/wr:
    io bytes per second; psi_mem: memory "some" stall fraction; throttled: the fraction of
    cpu.max periods throttled (10 periods a second); pids: pids.current.
    """

    name: CgroupName
    limits: Limits
    cpu: float
    mem: int
    rd: int = 0
    wr: int = 0
    psi_mem: float = 0.0
    throttled: float = 0.0
    pids: int = 1


def _name(path: str, kind: str, name: str, cid: str = "") -> CgroupName:
    labels = {"app": name} if kind == "container" else {}
    return CgroupName(path=path, kind=kind, name=name, id=cid, labels=labels)


SPECS: tuple[_Spec, ...] = (
    _Spec(_name("", "cgroup", "/"), Limits(), cpu=1.75, mem=3 * GI, rd=2 * MI, wr=MI, pids=240),
    _Spec(
        _name("system.slice", "slice", "system.slice"),
        Limits(memory_max=MAX, pids_max=MAX),
        cpu=0.12,
        mem=400 * MI,
        rd=64 << 10,
        pids=40,
    ),
    _Spec(
        _name("system.slice/sshd.service", "service", "sshd.service"),
        Limits(memory_high=MAX, memory_max=MAX, pids_max=MAX),
        cpu=0.01,
        mem=12 * MI,
        pids=3,
    ),
    _Spec(
        _name("system.slice/cron.service", "service", "cron.service"),
        Limits(memory_high=MAX, memory_max=256 * MI, pids_max=MAX),
        cpu=0.0,
        mem=4 * MI,
        pids=1,
    ),
    _Spec(_name("corral", "cgroup", "corral"), Limits(), cpu=1.5, mem=2 * GI, pids=60),
    _Spec(
        _name("corral/web", "container", "web", "c0ffee01"),
        Limits(CpuMax(50_000, 100_000), memory_high=512 * MI, memory_max=GI, pids_max=100),
        cpu=0.48,
        mem=448 * MI,
        wr=256 << 10,
        throttled=0.3,
        pids=24,
    ),
    _Spec(
        _name("corral/db", "container", "db", "c0ffee02"),
        Limits(CpuMax(MAX, 100_000), memory_high=MAX, memory_max=2 * GI, pids_max=MAX),
        cpu=0.22,
        mem=1200 * MI,
        rd=MI,
        wr=512 << 10,
        pids=12,
    ),
    _Spec(
        _name("corral/batch", "container", "batch", "c0ffee03"),
        Limits(CpuMax(200_000, 100_000), memory_high=256 * MI, memory_max=MAX, pids_max=32),
        cpu=0.8,
        mem=300 * MI,
        rd=3 * MI,
        wr=8 * MI,
        psi_mem=0.125,
        pids=30,
    ),
    _Spec(_name("user.slice", "slice", "user.slice"), Limits(), cpu=0.25, mem=600 * MI, pids=80),
    _Spec(
        _name("user.slice/user-1000.slice", "slice", "user-1000.slice"),
        Limits(memory_max=MAX, pids_max=10_000),
        cpu=0.25,
        mem=580 * MI,
        pids=78,
    ),
)
PATHS: tuple[str, ...] = tuple(s.name.path for s in SPECS)
CONTAINERS: tuple[str, ...] = tuple(s.name.path for s in SPECS if s.name.kind == "container")
NAMES: dict[str, CgroupName] = {s.name.path: s.name for s in SPECS}


def _psi(fraction: float, seconds: float) -> Pressure:
    """A pressure file after ``seconds`` stalled at ``fraction``; avg10 is that percentage."""
    line = PressureLine(
        fraction * 100, fraction * 100, fraction * 100, int(fraction * seconds * 1e6)
    )
    return Pressure(some=line, full=line)


def cgroup_sample(spec: _Spec, step: int) -> CgroupSample:
    """``spec``'s cgroup at step ``step`` (counters advanced ``step`` seconds from zero)."""
    seconds = 100.0 + step
    usage = round(spec.cpu * seconds * 1e6)
    periods = 10 * (100 + step) if spec.limits.cpu_max else None
    throttled = round(spec.throttled * periods) if periods is not None else None
    cpu = CpuStat(usage, usage * 3 // 4, usage // 4, periods, throttled, throttled)
    io = {DISK: IoStat(int(spec.rd * seconds), int(spec.wr * seconds), int(seconds), 0)}
    psi = _psi(spec.psi_mem, seconds)
    return CgroupSample(
        path=spec.name.path,
        cpu=cpu,
        memory_current=spec.mem,
        memory_stat={"anon": spec.mem // 2, "file": spec.mem // 2, "inactive_file": spec.mem // 4},
        io=io,
        pids_current=spec.pids,
        pressure={"cpu": _psi(0.0, seconds), "memory": psi, "io": _psi(0.0, seconds)},
        nr_procs=spec.pids,
        limits=spec.limits,
    )


def host_sample(step: int, specs: Sequence[_Spec] = SPECS) -> HostSample:
    return HostSample(
        wall_time=FIRST_WALL + step,
        monotonic=FIRST_MONOTONIC + step,
        cgroups={s.name.path: cgroup_sample(s, step) for s in specs},
    )


def snapshots(count: int, first_step: int = 0, specs: Sequence[_Spec] = SPECS) -> list[Snapshot]:
    """``count`` consecutive snapshots, seq first_step+1.., each with rates against the one
    before it (the first against a sample one second earlier, so every figure is known)."""
    result = []
    prev = host_sample(first_step - 1, specs)
    names = {s.name.path: s.name for s in specs}
    for step in range(first_step, first_step + count):
        cur = host_sample(step, specs)
        result.append(build_snapshot(prev, cur, seq=step + 1, names=names, collect_seconds=0.01))
        prev = cur
    return result


def audit_entries() -> list[AuditEntry]:
    """The enforcer's log, oldest first: web squeezed twice, batch refused, db dry-run."""

    def entry(
        t: float, rule: str, cgroup: str, file: str, old: str, new: str, outcome: Outcome
    ) -> AuditEntry:
        mode = Mode.DRY_RUN if outcome is Outcome.DRY_RUN else Mode.ENFORCE
        reason = {
            Outcome.REFUSED: "refused: below the floor of 128Mi",
            Outcome.DRY_RUN: "would raise: memory pressure",
        }.get(outcome, "memory pressure above target")
        inputs = {"pressure_memory_some": 0.12, "memory_current": 470_000_000}
        return AuditEntry(t, rule, "memory", cgroup, file, old, new, mode, outcome, reason, inputs)

    w = FIRST_WALL
    return [
        entry(w - 30, "squeeze", "corral/web", "memory.high", "max", "805306368", Outcome.APPLIED),
        entry(
            w - 20, "squeeze", "corral/batch", "memory.high", "max", "100663296", Outcome.REFUSED
        ),
        entry(
            w - 10,
            "squeeze",
            "corral/web",
            "memory.high",
            "805306368",
            "536870912",
            Outcome.APPLIED,
        ),
        entry(w - 5, "headroom", "corral/db", "memory.max", "2147483648", "max", Outcome.DRY_RUN),
    ]


def frame(history: int = 10, *, step: int = 9, audit: bool = True, position: str = "live") -> Frame:
    """The frame at ``step`` with ``history`` snapshots of history ending there."""
    snaps = snapshots(history, step - history + 1)
    entries = tuple(audit_entries()) if audit else ()
    return Frame(snaps[-1], tuple(snaps), entries, position)


def processes(cgroup: str) -> list[ProcessRow]:
    """Three made-up processes per cgroup, with figures derived from its fixture."""
    spec = next(s for s in SPECS if s.name.path == cgroup)
    base = 1000 + PATHS.index(cgroup) * 100
    return [
        ProcessRow(base, "root", f"{spec.name.name} --main", spec.mem // 2, spec.cpu / 2),
        ProcessRow(base + 1, "nobody", f"{spec.name.name} worker 1", spec.mem // 4, spec.cpu / 3),
        ProcessRow(base + 2, "nobody", f"{spec.name.name} worker 2", spec.mem // 8, spec.cpu / 6),
    ]


def pilot_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An ``async def`` pilot test run as a plain pytest test (no asyncio plugin here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeSource:
    """A live Source over the fixture that hands out frames only when a test lets it: the
    first frame is free, each ``advance()`` releases one more (frame k is fixture step
    9+k). Calls listed in ``disconnect_calls`` (numbered from 0) raise SourceDisconnected
    instead of giving a frame. next_frame blocks until released or closed."""

    label = "fake"
    seekable = False

    def __init__(
        self,
        *,
        interval: float = 1.0,
        disconnect_calls: Sequence[int] = (),
        history: int = 10,
    ) -> None:
        self.interval = interval
        self.calls = 0
        self.frames = 0
        self.closed = False
        self._disconnect = set(disconnect_calls)
        self._history = history
        self._gate = threading.Semaphore(1)

    def advance(self, calls: int = 1) -> None:
        """Let ``calls`` more next_frame calls return (or raise, if scripted to)."""
        for _ in range(calls):
            self._gate.release()

    def next_frame(self) -> Frame:
        while not self._gate.acquire(timeout=0.05):
            if self.closed:
                raise SourceDisconnected("fake source closed")
        call = self.calls
        self.calls += 1
        if call in self._disconnect:
            raise SourceDisconnected(f"connection refused (call {call})")
        self.frames += 1
        return frame(self._history, step=8 + self.frames)

    def seek(self, frames: int) -> Frame:
        raise CannotSeek("fake live source")

    def processes(self, cgroup: str) -> list[ProcessRow] | None:
        return processes(cgroup) if cgroup in NAMES else None

    def close(self) -> None:
        self.closed = True


class FakeReplay:
    """A seekable Source over ``length`` fixture steps. next_frame() plays forward one step
    (staying on the last) but, as FakeSource, only when released: the first is free, then
    one per ``advance()``. seek() answers at once, moving from the frame last returned and
    stopping at both ends; ``seeks`` records each call."""

    seekable = True

    def __init__(self, length: int = 40, *, interval: float = 1.0) -> None:
        self.label = "replay: fixture"
        self.interval = interval
        self.length = length
        self.index = -1  # no frame shown yet
        self.seeks: list[int] = []
        self.closed = False
        self._snaps = snapshots(length)
        self._gate = threading.Semaphore(1)

    def advance(self, calls: int = 1) -> None:
        for _ in range(calls):
            self._gate.release()

    def _frame(self) -> Frame:
        lo = max(0, self.index - 9)
        history = tuple(self._snaps[lo : self.index + 1])
        audit = tuple(a for a in audit_entries() if a.time <= history[-1].sample.wall_time)
        return Frame(history[-1], history, audit, f"frame {self.index + 1}/{self.length}")

    def next_frame(self) -> Frame:
        while not self._gate.acquire(timeout=0.05):
            if self.closed:
                raise SourceDisconnected("fake replay closed")
        self.index = min(self.index + 1, self.length - 1)
        return self._frame()

    def seek(self, frames: int) -> Frame:
        self.seeks.append(frames)
        self.index = min(max(self.index + frames, 0), self.length - 1)
        return self._frame()

    def processes(self, cgroup: str) -> list[ProcessRow] | None:
        return None

    def close(self) -> None:
        self.closed = True
