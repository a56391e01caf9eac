"""Replaying a trace through a policy, or a baseline, against the kernel model.

A policy run is the live enforcement loop with the kernel replaced by the model: each tick
the model answers the workloads' demand under the current limits and yields a Snapshot; the
same ``enforce.engine.Engine.decide`` sees the recent history; every action goes through the
same outcome rules as ``enforce.actuator.Actuator`` (recommend, ``enforce.safeguards.refusal``,
drift -> SKIPPED, the write rate limit, dry-run, write) with the model as the kernel; the
audit entries go back to ``Engine.observe``. A baseline run writes the baseline's limits
directly. Both are scored by enforce.simulate.score.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from enforce.actions import Action, AuditEntry, Mode, Outcome, format_value
from enforce.policy.schema import EnforcerSettings, Policy
from enforce.simulate.baselines import BASELINES, Baseline
from enforce.simulate.kernel_model import KernelModel
from enforce.simulate.score import Meter, Score
from enforce.simulate.traces import Trace
from monitor.snapshot import Snapshot

HISTORY_SNAPSHOTS = 900  # monitor.history's default ring: 15 minutes at one poll a second
RATE_LIMITED = "rate limit: more than {rate:g} writes per second (max_writes_per_second)"


@dataclass(frozen=True, slots=True)
class Simulation:
    """Every run on one trace: the policy's first, then the baselines'."""

    trace: Trace
    scores: tuple[Score, ...]


class SimActuator:
    """Actuator's outcome rules against the model: the write lands in the model's limits."""

    def __init__(self, model: KernelModel, settings: EnforcerSettings, meter: Meter) -> None:
        self.model = model
        self.settings = settings
        self.meter = meter
        self.capacity = max(1.0, settings.max_writes_per_second)
        self.tokens = self.capacity
        self.refilled: float | None = None

    def apply(self, actions: Sequence[Action], snapshot: Snapshot, tick: int) -> list[AuditEntry]:
        from enforce.safeguards import refusal

        entries = []
        self._refill(snapshot.sample.monotonic)
        for action in actions:
            outcome, reason = Outcome.RECOMMENDED, ""
            if action.mode is not Mode.RECOMMEND:
                refused = refusal(action, snapshot, self.settings, None)
                outcome, reason = (
                    (Outcome.REFUSED, refused) if refused else self._write(action, tick)
                )
            if outcome is Outcome.REFUSED:
                self.meter.refusals += 1
            entries.append(AuditEntry.of(action, outcome, snapshot.sample.wall_time, reason))
        return entries

    def _write(self, action: Action, tick: int) -> tuple[Outcome, str]:
        from enforce.actuator import same_value

        current = self.model.read(action.cgroup, action.file)
        drift = (
            action.old is not None
            and action.file != "cgroup.kill"
            and current is not None
            and not same_value(action.file, current, action.old)
        )
        if drift:
            return Outcome.SKIPPED, (
                f"{action.file} is {format_value(current)}, not "
                f"{format_value(action.old)} as decided"
            )
        if self.tokens < 1.0:
            return Outcome.REFUSED, RATE_LIMITED.format(rate=self.settings.max_writes_per_second)
        self.tokens -= 1.0
        if action.mode is Mode.DRY_RUN:
            return Outcome.DRY_RUN, ""
        try:
            self.model.write(action.cgroup, action.file, action.new)
        except ValueError as e:
            return Outcome.FAILED, f"write failed: {e}"
        self.meter.write(tick, action.cgroup, action.file, current, action.new)
        return Outcome.APPLIED, ""

    def _refill(self, now: float) -> None:
        if self.refilled is not None:
            rate = self.settings.max_writes_per_second
            self.tokens = min(self.capacity, self.tokens + (now - self.refilled) * rate)
        self.refilled = now


def run_policy(trace: Trace, policy: Policy, *, name: str = "corral") -> Score:
    """Replay ``trace`` under ``policy`` through the Engine; its score."""
    from enforce.engine import Engine

    engine = Engine(policy)
    model = KernelModel(trace)
    meter = Meter(trace.tick_seconds)
    actuator = SimActuator(model, policy.settings, meter)
    history: deque[Snapshot] = deque(maxlen=HISTORY_SNAPSHOTS)
    for tick in range(trace.ticks):
        snapshot, results = model.step(tick)
        meter.tick(tick, results, _current(model))
        history.append(snapshot)
        actions = engine.decide(list(history))
        if actions:
            engine.observe(actuator.apply(actions, snapshot, tick))
    return meter.score(name, trace.name)


def run_baseline(trace: Trace, baseline: Baseline) -> Score:
    """Replay ``trace`` with ``baseline`` setting the limits; its score."""
    model = KernelModel(trace)
    meter = Meter(trace.tick_seconds)
    for tick in range(trace.ticks):
        snapshot, results = model.step(tick)
        meter.tick(tick, results, _current(model))
        for cgroup, file, value in baseline.decide(snapshot, model.cgroups.keys()):
            old = model.read(cgroup, file)
            model.write(cgroup, file, value)
            meter.write(tick, cgroup, file, old, value)
    return meter.score(baseline.name, trace.name)


def simulate(
    trace: Trace, policy: Policy, *, baselines: Iterable[str] = tuple(BASELINES)
) -> Simulation:
    """The policy's score on ``trace``, then each named baseline's."""
    scores = [run_policy(trace, policy)]
    scores.extend(run_baseline(trace, BASELINES[b]()) for b in baselines)
    return Simulation(trace, tuple(scores))


def _current(model: KernelModel) -> dict[str, int]:
    return {path: state.current for path, state in model.cgroups.items()}
