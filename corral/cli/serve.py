"""`corral serve --no-enforce`: the collector and the Prometheus exporter as a service.

Polls every cgroup under the cgroup2 root (or ``--subtree``) each ``--interval`` and serves
/metrics, /healthz and a landing page on ``--listen`` (default 127.0.0.1:9847) until SIGTERM
or SIGINT. Logs go to stderr one line per event; under systemd (stderr connected to the
journal, $JOURNAL_STREAM) each line starts with its sd-daemon priority, ``<6>`` for info,
which journald turns into the entry's priority and strips.

Exit status: 0 after a signal, 1 when the cgroup root cannot be read or the address cannot
be bound, 2 for bad options or a bad --web-config, and 2 without --no-enforce: the enforcer
arrives with the enforce issue.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import click

from corral.cli.durations import parse_duration
from corral.cli.selection import collector_options
from monitor.agent import Agent
from monitor.collector import Collector, CollectorConfig
from monitor.exporter import DEFAULT_HOST, DEFAULT_PORT, Exporter
from monitor.exporter.server import MetricsServer, parse_listen
from monitor.exporter.webconfig import WebConfig, WebConfigError, load_web_config
from runtime.cgroupfs import CgroupError, CgroupFS
from runtime.cgroupfs.openfiles import FD_RESERVE, raise_fd_rlimit
from runtime.syscalls import set_mmap_threshold

log = logging.getLogger("corral.serve")
MMAP_THRESHOLD = 128 * 1024  # glibc's default, made fixed (runtime.syscalls.set_mmap_threshold)
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
NO_ENFORCER = (
    "corral serve: the enforcer arrives with the enforce issue and is not in this version.\n"
    "Run `corral serve --no-enforce` for the collector and the Prometheus exporter alone."
)


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
@click.option("--no-enforce", is_flag=True, help="Collect and export only (required for now).")
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
    """Run the collector and the Prometheus exporter until SIGTERM or SIGINT."""
    if not no_enforce:
        click.echo(NO_ENFORCER, err=True)
        sys.exit(2)
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
    exporter = Exporter(seconds)
    try:
        server = MetricsServer(exporter, host, port, web)
    except OSError as e:
        collector.close()
        raise click.ClickException(f"cannot listen on {listen}: {e.strerror}") from None
    run(Agent(collector, exporter, seconds), server, f"{fs.root}/{subtree}".rstrip("/"))


def _web_config(path: str | None) -> WebConfig | None:
    if path is None:
        return None
    try:
        return load_web_config(path)
    except WebConfigError as e:
        raise click.BadParameter(str(e), param_hint="--web-config") from None


def run(agent: Agent, server: MetricsServer, where: str) -> None:
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
    current = agent.exporter.current
    count = len(current.view.snapshot.sample.cgroups) if current else 0
    log.info(
        "listening on %s (/metrics, /healthz); polling %d cgroup(s) under %s every %gs; "
        "enforcement off (--no-enforce)",
        server.url,
        count,
        where,
        agent.interval,
    )
    while not stop.wait(0.5):
        pass
    log.info("stopping on %s", received[0])
    server.stop()
    agent.stop()
    log.info("stopped")
