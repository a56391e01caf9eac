"""`corral serve`: the agent. The collector, the Prometheus exporter, the dashboard's JSON
API and, given ``--policy``, the enforcer, until SIGTERM or SIGINT.

Without a policy (or with ``--no-enforce``) it polls every cgroup under the cgroup2 root (or
``--subtree``) each ``--interval``. With one, the enforcement loop (enforce.loop) does the
polling at the policy's tick, and early when a PSI trigger fires: each snapshot it polls is
published to the exporter, so one collector serves both and the enforcer's metrics
(corral_enforcer_*) come with every scrape. /metrics, /healthz, /api/v1/{snapshot,history,
audit} and a landing page are served on ``--listen`` (default 127.0.0.1:9847).

Logs go to stderr one line per event; under systemd (stderr connected to the journal,
$JOURNAL_STREAM) each line starts with its sd-daemon priority, ``<6>`` for info, which
journald turns into the entry's priority and strips.

Exit status: 0 after a signal, 1 when the cgroup root cannot be read, the address cannot be
bound or the audit log cannot be opened, 2 for bad options, a bad --web-config or a policy
that does not validate (as `corral policy check`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import click

from corral.cli.durations import parse_duration
from corral.cli.selection import collector_options
from monitor.agent import Agent
from monitor.collector import Collector, CollectorConfig
from monitor.exporter import DEFAULT_HOST, DEFAULT_PORT, Exporter
from monitor.exporter.api import ApiProvider
from monitor.exporter.server import MetricsServer, parse_listen
from monitor.exporter.webconfig import WebConfig, WebConfigError, load_web_config
from monitor.history import History
from runtime.cgroupfs import CgroupError, CgroupFS
from runtime.cgroupfs.openfiles import FD_RESERVE, raise_fd_rlimit
from runtime.syscalls import set_mmap_threshold

if TYPE_CHECKING:  # the enforcer is imported only when a policy is given
    from enforce.loop import EnforcementLoop
    from enforce.policy.schema import Policy

log = logging.getLogger("corral.serve")
MMAP_THRESHOLD = 128 * 1024  # glibc's default, made fixed (runtime.syscalls.set_mmap_threshold)
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
# What /api/v1/history keeps for `corral top --url` without an enforcer: the dashboard
# builds its plots' window from the polls it fetches, so the agent holds only enough to
# cover a client's gap, bounded in cgroup samples (a busy cgroup's sample is a few KB).
HISTORY_SECONDS = 300.0
HISTORY_CGROUP_SAMPLES = 5_000


class JournalFormatter(logging.Formatter):
    """One line per event: ``<PRIORITY>logger: message`` for journald, else
    ``level: logger: message``. A traceback's lines are joined with " | "."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(super().format(record).splitlines())
        if self.journal:
            return f"<{PRIORITY.get(record.levelno, 2)}>{text}"
        return f"{record.levelname.lower()}: {text}"


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=DEVICE:INODE of the stream it connected to the journal."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(stderr_is_journal()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@click.command()
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(),
    metavar="FILE|DIR",
    help="Enforce this policy (a TOML file, or a directory of them merged in name order).",
)
@click.option("--dry-run", is_flag=True, help="Decide and audit by the policy; write nothing.")
@click.option("--audit-log", metavar="PATH", help="Default: the policy's [enforcer] audit_log.")
@click.option("--no-enforce", is_flag=True, help="Collect and export only (no --policy).")
@click.option(
    "--listen",
    default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    metavar="HOST:PORT",
    help="Address of /metrics, /healthz and the landing page.",
)
@click.option("--interval", default="1s", show_default=True, help="Poll every (1s, 500ms, 2m).")
@collector_options
@click.option(
    "--web-config",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="TLS and basic auth, in the Prometheus exporters' web config format.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    policy_path: str | None,
    dry_run: bool,
    audit_log: str | None,
    no_enforce: bool,
    listen: str,
    interval: str,
    cgroup_root: str | None,
    subtree: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_depth: int | None,
    web_config: str | None,
    fd_limit: int,
    recheck_every: int,
    log_level: str,
) -> None:
    """Run the agent (collector, exporter, API, enforcer) until SIGTERM or SIGINT."""
    if no_enforce and (policy_path or dry_run or audit_log):
        raise click.UsageError("--no-enforce runs no enforcer: drop --policy/--dry-run/--audit-log")
    if (dry_run or audit_log) and not policy_path:
        raise click.UsageError("--dry-run and --audit-log need --policy FILE|DIR")
    policy = _policy(policy_path) if policy_path else None
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--listen") from None
    seconds = parse_duration(interval, "--interval", 0.1, 3600)
    web = _web_config(web_config)
    try:
        config = CollectorConfig(
            subtree, include or ("**",), exclude, max_depth, fd_limit, recheck_every
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--subtree") from None
    setup_logging(log_level)
    raise_fd_rlimit(fd_limit + FD_RESERVE)
    # Each scrape of a new poll builds a body of a few MB: those buffers must go back to the
    # kernel when the next poll replaces them, not stay in the heap as RSS.
    set_mmap_threshold(MMAP_THRESHOLD)
    try:
        fs = CgroupFS(cgroup_root) if cgroup_root else CgroupFS.discover()
    except CgroupError as e:
        raise click.ClickException(str(e)) from None
    collector = Collector(fs, config)
    where = f"{fs.root}/{subtree}".rstrip("/")
    if policy is None:
        exporter = Exporter(seconds)
        history = History(
            max_age_seconds=HISTORY_SECONDS, max_cgroup_samples=HISTORY_CGROUP_SAMPLES
        )
        agent: Runner = Agent(collector, exporter, seconds, history)
        provider = ApiProvider(history)
        what = f"every {seconds:g}s; enforcement off"
    else:
        exporter = Exporter(policy.settings.tick_seconds)
        loop = _loop(policy, fs, collector, exporter, dry_run, audit_log)
        agent, provider = loop, ApiProvider(loop.history, _audit_feed(loop))
        what = (
            f"every {policy.settings.tick_seconds:g}s (the policy's tick) and on PSI triggers; "
            f"enforcing {policy.source}{' as a dry run' if dry_run else ''}, audit to "
            f"{loop.audit.path or 'memory only'}"
        )
    try:
        server = MetricsServer(exporter, host, port, web, provider)
    except OSError as e:
        collector.close()
        raise click.ClickException(f"cannot listen on {listen}: {e.strerror}") from None
    run(agent, exporter, server, f"polling {{}} cgroup(s) under {where} {what}")


class Runner(Protocol):
    """What `run` starts and stops: monitor.agent.Agent, or enforce.loop.EnforcementLoop."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


def _policy(path: str) -> Policy:
    from enforce.policy import PolicyError, load_policies

    try:
        return load_policies(path)
    except PolicyError as e:
        click.echo(f"corral serve: {e}", err=True)
        sys.exit(2)


def _loop(
    policy: Policy,
    fs: CgroupFS,
    collector: Collector,
    exporter: Exporter,
    dry_run: bool,
    audit_log: str | None,
) -> EnforcementLoop:
    from enforce.audit import AuditLog
    from enforce.loop import EnforcementLoop

    path = audit_log if audit_log is not None else policy.settings.audit_log
    try:
        audit = AuditLog(path or None)
    except OSError as e:
        collector.close()
        raise click.ClickException(f"cannot open the audit log {path}: {e.strerror}") from None
    loop = EnforcementLoop(
        policy, fs, audit=audit, dry_run=dry_run, collector=collector, publish=exporter.publish
    )
    exporter.add_families(loop.metrics.render)
    return loop


def _audit_feed(loop: EnforcementLoop) -> Callable[[float], list[dict[str, Any]]]:
    from enforce.audit import to_json

    def feed(after: float) -> list[dict[str, Any]]:
        return [json.loads(to_json(e)) for e in loop.audit.recent() if e.time > after]

    return feed


def _web_config(path: str | None) -> WebConfig | None:
    if path is None:
        return None
    try:
        return load_web_config(path)
    except WebConfigError as e:
        raise click.BadParameter(str(e), param_hint="--web-config") from None


def run(agent: Runner, exporter: Exporter, server: MetricsServer, what: str) -> None:
    """Serve until SIGTERM or SIGINT; a second signal kills at once (default handling)."""
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    agent.start()
    server.start()
    current = exporter.current
    count = len(current.view.snapshot.sample.cgroups) if current else 0
    log.info("listening on %s (/metrics, /healthz, /api/v1); %s", server.url, what.format(count))
    while not stop.wait(0.5):
        pass
    log.info("stopping on %s", received[0])
    server.stop()
    agent.stop()
    log.info("stopped")
