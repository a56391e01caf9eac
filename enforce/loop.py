"""The enforcement loop: poll -> history -> decide -> apply -> observe, once per tick, and
at once when a PSI trigger fires.

Each round reads a Snapshot (monitor.collector), appends it to a History, asks the Engine
what the policy wants (a pure function of the history), hands the actions to the Actuator
(safeguards, drift check, rate limit, write, audit) and tells the Engine what became of
them. It then arms the PSI triggers the Engine asks for (runtime.cgroupfs.psi_trigger) and
sleeps in poll(2) on all of them until the next tick: a trigger firing ("memory some stall
grew 150 ms within 1 s") starts a round at once, which is how memory_pressure backs off
memory.high well within a second of the onset of pressure instead of up to a tick later.

Used by ``corral enforce`` (run in the foreground) and by ``corral serve`` (``start`` a
thread, ``stop`` it; ``metrics.render`` is given to the agent's Exporter.add_families). In
``corral serve`` the loop's collector is the agent's only one: ``publish`` hands each
snapshot to the exporter, and the loop's history is what the dashboard API serves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from enforce.actions import Action, AuditEntry, Mode, Outcome
from enforce.actuator import Actuator
from enforce.audit import AuditLog
from enforce.engine import Engine
from enforce.metrics import EnforcerMetrics
from enforce.policy.schema import Policy
from monitor.collector import Collector, CollectorConfig
from monitor.history import History
from monitor.snapshot import Snapshot
from runtime.cgroupfs import CgroupError, CgroupFS, CgroupGone
from runtime.cgroupfs.psi_trigger import Key, TriggerSet, TriggerSpec, TriggerUnavailable

log = logging.getLogger("corral.enforce")

# A trigger fires at most once per window per cgroup, but many cgroups can fire one after
# another: rounds woken early are at least this far apart, so a pressure storm across the
# host cannot turn the loop into a busy poll.
MIN_EARLY_GAP = 0.1
HISTORY_SECONDS = 900.0  # what the controllers look back over at most (cpu_quota's window)


def own_cgroup(proc: str = "/proc/self/cgroup") -> str | None:
    """This process's cgroup v2 path (the "0::" line), relative to the root."""
    try:
        with open(proc, encoding="utf-8") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip().strip("/")
    except OSError:
        return None
    return None


class EnforcementLoop:
    """One engine, one actuator, one collector. ``run_once`` is a round; ``run`` loops in
    the calling thread until ``stop``; ``start`` runs it in a thread of its own."""

    def __init__(
        self,
        policy: Policy,
        fs: CgroupFS,
        *,
        audit: AuditLog | None = None,
        dry_run: bool = False,
        collector: Collector | None = None,
        engine: Engine | None = None,
        own: str | None = None,
        clock: Callable[[], float] = time.time,
        publish: Callable[[Snapshot], object] | None = None,
    ) -> None:
        self.policy = policy
        self.settings = policy.settings
        self.fs = fs
        self.dry_run = dry_run
        self.audit = audit if audit is not None else AuditLog(self.settings.audit_log)
        self.collector = collector if collector is not None else Collector(fs, CollectorConfig())
        self._owns_collector = collector is None
        self.engine = engine if engine is not None else Engine(policy)
        self.own_cgroup = own if own is not None else own_cgroup()
        self.actuator = Actuator(fs, self.settings, self.audit, self.own_cgroup, clock)
        self.metrics = EnforcerMetrics()
        self.history = History(max_age_seconds=HISTORY_SECONDS)
        self.triggers = TriggerSet(fs)
        self.publish = publish  # corral serve: the exporter gets every snapshot the loop polls
        self.rounds = 0
        self.early_rounds = 0  # rounds started by a PSI trigger rather than the tick
        self._unavailable: set[tuple[Key, TriggerSpec]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # a round, or a policy swap: never both at once

    def replace_policy(self, policy: Policy) -> tuple[str, ...]:
        """Enforce ``policy`` from the next round on (corral serve's SIGHUP); thread safe, it
        waits for a round in progress. Controller state and the originals to restore carry
        over for the rules whose definition did not change; a new or changed rule starts
        afresh. Returns the names of the rules whose state was kept."""
        with self._lock:
            old = {rule.name: rule for rule in self.policy.rules}
            kept = tuple(r.name for r in policy.rules if old.get(r.name) == r)
            engine = self.engine.successor(policy)
            actuator = Actuator(
                self.fs, policy.settings, self.audit, self.own_cgroup, self.actuator._clock
            )
            actuator.written = self.actuator.written
            self.policy, self.settings = policy, policy.settings
            self.engine, self.actuator = engine, actuator
        return kept

    # -- one round ---------------------------------------------------------------------------

    def run_once(self) -> list[AuditEntry]:
        """Poll, decide, apply, observe, re-arm the triggers. Returns the round's audit."""
        with self._lock:
            return self._run_once()

    def _run_once(self) -> list[AuditEntry]:
        snapshot = self.collector.poll()
        self.history.append(snapshot)
        if self.publish is not None:
            self.publish(snapshot)
        actions = self.engine.decide(self.history.snapshots())
        if self.dry_run:
            actions = [_dry(a) for a in actions]
        entries = self.actuator.apply(actions, snapshot)
        self.engine.observe(entries)
        for entry in entries:
            log.debug(
                "%s %s/%s %s %s %s -> %s: %s",
                entry.outcome.value,
                entry.rule,
                entry.controller,
                entry.cgroup,
                entry.file,
                entry.old,
                entry.new,
                entry.reason,
            )
            if entry.outcome in (Outcome.APPLIED, Outcome.SKIPPED):
                # Our own write, or someone else's: read every limit of it next poll.
                self.collector.limits_changed(entry.cgroup)
        self.metrics.record(entries)
        self.metrics.retain(snapshot.sample.cgroups)
        self.metrics.decided(snapshot.sample.wall_time)
        self._arm(snapshot)
        self.rounds += 1
        return entries

    def _arm(self, snapshot: Snapshot) -> None:
        wanted: dict[Key, TriggerSpec] = {}
        for cgroup, resource, text in self.engine.triggers(snapshot):
            wanted[(cgroup, resource)] = TriggerSpec.parse(text)
        self.triggers.keep_only(wanted)
        for key, spec in wanted.items():
            if (key, spec) in self._unavailable:
                continue
            try:
                if self.triggers.arm(key[0], key[1], spec):
                    log.debug("armed PSI trigger %r on %s %s.pressure", str(spec), *key)
            except CgroupGone:
                continue  # gone before we got to it: the next poll will not list it
            except (TriggerUnavailable, CgroupError) as e:
                self._unavailable.add((key, spec))
                log.warning("%s; %s reacts at the tick only", e, key[0] or "/")

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Rounds every tick_seconds, and early when a trigger fires, until ``stop``. A
        round that raises is logged and the loop goes on; the exit policy runs at the end."""
        try:
            next_at = time.monotonic()
            last = float("-inf")
            while not self._stop.is_set():
                now = time.monotonic()
                tick = self.settings.tick_seconds  # replace_policy may change it
                if now >= next_at:
                    self._round()
                    last = time.monotonic()
                    next_at += tick
                    if next_at <= last:  # the round overran the tick: skip, do not catch up
                        next_at = last + tick
                    continue
                wake = self.triggers.wait(next_at - now)
                if self._stop.is_set():
                    break
                if wake.fired and time.monotonic() - last >= MIN_EARLY_GAP:
                    log.debug("PSI trigger fired: %s", wake.fired)
                    self.early_rounds += 1
                    self._round()
                    last = time.monotonic()
        finally:
            self.close()

    def _round(self) -> None:
        try:
            self.run_once()
        except Exception as e:  # a bug, or the root unreadable: keep enforcing, say so
            log.error("enforcement round failed: %s: %s", type(e).__name__, e, exc_info=True)

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("this EnforcementLoop was started already")
        self._thread = threading.Thread(target=self.run, name="corral-enforcer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop (a round in progress finishes first) and wait for its exit work."""
        self._stop.set()
        self.triggers.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the enforcement loop did not stop within %.1fs", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> list[AuditEntry]:
        """The exit policy (on_exit: leave the limits, or restore what was there before the
        enforcer changed them), then release the triggers, the collector and the log."""
        if self._closed:
            return []
        self._closed = True
        restored: list[AuditEntry] = []
        if self.settings.on_exit == "restore":
            restored = self.actuator.restore(self.engine.originals(), self.history.latest())
            self.metrics.record(restored)
        self.triggers.close()
        if self._owns_collector:
            self.collector.close()
        self.audit.close()
        return restored


def _dry(action: Action) -> Action:
    """--dry-run: every action that would write is logged as a dry run instead."""
    return replace(action, mode=Mode.DRY_RUN) if action.mode is Mode.ENFORCE else action
