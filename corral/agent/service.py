"""The running agent: one collector, the exporter and its HTTP server, the dashboard's API
history, the recording, and either a poller (monitor.agent.Agent) or the enforcement loop
(enforce.loop), until SIGTERM or SIGINT; SIGHUP reloads the configuration and the policies.

Reload (``reload``): the file named at start (or the default one) is read again with the
same command-line flags laid over it, and its policy loaded; anything that does not validate
keeps the running configuration and logs one line saying why (FILE:LINE). What may change
live, and how, is corral.agent.reload's; log_level and [record] change live too.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
from typing import TYPE_CHECKING, Any, Protocol

from corral.agent import notify
from corral.agent.config import AgentConfig, Key, load_config
from corral.agent.plan import audit_path, enforcement, load_policy_of, poll_every, polling
from corral.agent.recording import AgentRecorder
from corral.agent.reload import keep_restart_keys, same_runner
from enforce.policy.toml_lines import LocatedError
from monitor.agent import Agent
from monitor.collector import Collector
from monitor.exporter import Exporter
from monitor.exporter.api import ApiProvider
from monitor.exporter.server import MetricsServer, parse_listen
from monitor.exporter.webconfig import WebConfig
from monitor.history import History
from monitor.recording import RecordingError
from monitor.snapshot import Snapshot
from runtime.cgroupfs import CgroupFS

if TYPE_CHECKING:
    from enforce.loop import EnforcementLoop
    from enforce.policy.schema import Policy

log = logging.getLogger("corral.serve")
# What /api/v1/history keeps for `corral top --url`: the dashboard builds its plots' window
# from the polls it fetches, so the agent holds only enough to cover a client's gap, bounded
# in cgroup samples (a busy cgroup's sample is a few KB).
HISTORY_SECONDS = 300.0
HISTORY_CGROUP_SAMPLES = 5_000


class StartError(Exception):
    """The agent cannot start: the address, the audit log or the recording (exit 1)."""


class Runner(Protocol):
    """monitor.agent.Agent or enforce.loop.EnforcementLoop."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class _Tap:
    """The collector as the Agent's poller, handing each snapshot to the recording; the
    service, not the Agent, closes the collector (it outlives a restarted poller)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def poll(self) -> Snapshot:
        snapshot = self.service.collector.poll()
        self.service.record(snapshot)
        return snapshot

    def close(self) -> None:
        pass


class Service:
    """Built from a validated config (raises StartError); ``run`` serves until a signal."""

    def __init__(
        self,
        config: AgentConfig,
        path: str | None,
        source: str | None,
        overrides: dict[Key, tuple[str, object]],
        policy: Policy | None,
        web: WebConfig | None,
        fs: CgroupFS,
    ) -> None:
        self.config, self.path, self.overrides, self.policy = config, path, overrides, policy
        self.source = source  # the file read at start (None: the defaults)
        self.fs = fs
        self.collector = Collector(fs, config.collector.collector_config())
        self.exporter = Exporter(poll_every(config, policy))
        self.history = History(
            max_age_seconds=HISTORY_SECONDS, max_cgroup_samples=HISTORY_CGROUP_SAMPLES
        )
        self.loop: EnforcementLoop | None = None
        self._families = False
        self.recorder: AgentRecorder | None = None
        try:
            self.recorder = self._recorder(config)
            self.runner = self._runner(config, policy)
            host, port = parse_listen(config.listen)
            provider = ApiProvider(self.history, self._audit)
            try:
                self.server = MetricsServer(self.exporter, host, port, web, provider)
            except OSError as e:
                raise StartError(f"cannot listen on {config.listen}: {e.strerror}") from None
        except StartError:
            self.close()
            raise

    # -- parts -------------------------------------------------------------------------------

    def _recorder(self, config: AgentConfig) -> AgentRecorder | None:
        if config.record.path is None:
            return None
        c = config.collector
        meta = {
            "cgroup_root": str(self.fs.root),
            "subtree": c.subtree,
            "include": list(c.include),
            "exclude": list(c.exclude),
            "max_depth": c.max_depth,
            "interval_seconds": max(poll_every(config, self.policy), config.record.interval),
        }
        try:
            return AgentRecorder(config.record, meta)
        except RecordingError as e:
            raise StartError(str(e)) from None

    def _runner(self, config: AgentConfig, policy: Policy | None) -> Runner:
        if policy is None:
            return Agent(_Tap(self), self.exporter, config.interval, self.history)
        from enforce.audit import AuditLog
        from enforce.loop import EnforcementLoop

        path = audit_path(config, policy)
        try:
            audit = AuditLog(path or None)
        except OSError as e:
            raise StartError(f"cannot open the audit log {path}: {e.strerror}") from None
        loop = EnforcementLoop(
            policy,
            self.fs,
            audit=audit,
            dry_run=config.enforcer.dry_run,
            collector=self.collector,
            publish=self._publish,
        )
        if not self._families:  # once: the source renders whichever loop runs now
            self.exporter.add_families(self._enforcer_families)
            self._families = True
        return loop

    def _publish(self, snapshot: Snapshot) -> None:
        """The enforcement loop's hook: each snapshot it polls is served and recorded."""
        self.exporter.publish(snapshot)
        self.history.append(snapshot)
        self.record(snapshot)

    def record(self, snapshot: Snapshot) -> None:
        recorder = self.recorder
        if recorder is not None:
            recorder.write(snapshot)

    def _enforcer_families(self, openmetrics: bool) -> bytes:
        loop = self.loop
        return loop.metrics.render(openmetrics) if loop is not None else b""

    def _audit(self, after: float) -> list[dict[str, Any]] | None:
        from enforce.audit import to_json

        loop = self.loop
        if loop is None:
            return None  # no enforcer runs: /api/v1/audit says so
        return [json.loads(to_json(e)) for e in loop.audit.recent() if e.time > after]

    def _start(self, runner: Runner) -> None:
        from enforce.loop import EnforcementLoop

        self.loop = runner if isinstance(runner, EnforcementLoop) else None
        self.runner = runner
        runner.start()

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (a second one kills at once: default handling)."""
        received: list[int] = []
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_fd = signal.set_wakeup_fd(w)

        def on_signal(signum: int, frame: object) -> None:
            received.append(signum)
            if signum != signal.SIGHUP:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        try:
            self._start(self.runner)
            self.server.start()
            current = self.exporter.current
            count = len(current.view.snapshot.sample.cgroups) if current else 0
            log.info(
                "listening on %s (/metrics, /healthz, /api/v1); %s%s",
                self.server.url,
                polling(self.config, self.policy, str(self.fs.root), count),
                f"; configuration {self.source}" if self.source else "",
            )
            notify.sd_notify("READY=1")
            stop = self._wait(r, received)
            log.info("stopping on %s", signal.Signals(stop).name)
            notify.sd_notify("STOPPING=1")
        finally:
            signal.set_wakeup_fd(old_fd)
            os.close(r)
            os.close(w)
            self.close()
        log.info("stopped")

    def _wait(self, r: int, received: list[int]) -> int:
        """Reload on each SIGHUP; return the first SIGTERM or SIGINT."""
        waiter = select.poll()
        waiter.register(r, select.POLLIN)
        while True:
            waiter.poll(1000)
            try:
                while os.read(r, 512):
                    pass
            except BlockingIOError:
                pass
            while received:
                signum = received.pop(0)
                if signum != signal.SIGHUP:
                    return signum
                self.reload()

    def close(self) -> None:
        """Stop serving and polling (the loop's on_exit runs), close the recording."""
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.stop()
        if self.recorder is not None:
            self.recorder.close()
        self.collector.close()

    # -- SIGHUP ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read, validate, swap in; on any fault keep what runs and say why."""
        notify.reloading()
        where = self.path or self.source or "the defaults"
        try:
            new, _ = load_config(self.path, self.overrides)
            policy = load_policy_of(new)
        except LocatedError as e:  # ConfigError and PolicyError: one line per fault
            errors = e.errors
            log.error("reload refused, the running configuration stays: %s", "; ".join(errors))
            notify.sd_notify("READY=1")
            return
        new = keep_restart_keys(self.config, new)
        if new.log_level != self.config.log_level:
            logging.getLogger().setLevel(new.log_level.upper())
        new = self._swap_recorder(new)
        try:
            self._swap_runner(new, policy)
        except StartError as e:
            log.error("reload refused, the running enforcer stays: %s", e)
            new = new.model_copy(update={"enforcer": self.config.enforcer})
        self.config = new
        log.info("reloaded %s: %s", where, enforcement(new, self.policy))
        notify.sd_notify("READY=1")

    def _swap_recorder(self, new: AgentConfig) -> AgentConfig:
        if new.record == self.config.record:
            return new
        try:
            recorder = self._recorder(new)
        except StartError as e:
            log.error("the recording stays as it was: %s", e)
            return new.model_copy(update={"record": self.config.record})
        old, self.recorder = self.recorder, recorder
        if old is not None:
            old.close()
        log.info("recording %s", f"to {new.record.path}" if recorder else "stopped")
        return new

    def _swap_runner(self, new: AgentConfig, policy: Policy | None) -> None:
        same_mode = same_runner(self.config, self.policy, new, policy)
        if same_mode and policy is not None and self.loop is not None:
            kept = set(self.loop.replace_policy(policy))
            reset = [r.name for r in policy.rules if r.name not in kept]
            self.exporter.interval = policy.settings.tick_seconds
            log.info("policy %s swapped in: state kept for %s; started afresh: %s",
                     policy.source, ", ".join(sorted(kept)) or "no rule",
                     ", ".join(reset) or "no rule")  # fmt: skip
        elif not same_mode:
            runner = self._runner(new, policy)  # before stopping the old: may raise
            self.runner.stop()
            if self.loop is not None:
                log.info("the enforcer stopped (its on_exit applied; its state is reset)")
            self.exporter.interval = poll_every(new, policy)
            self._start(runner)
        self.policy = policy
