"""`corral serve`: the agent. The collector, the Prometheus exporter, the dashboard's JSON
API, given a policy the enforcer, and given ``--record`` a recording, until SIGTERM or SIGINT;
SIGHUP reloads the configuration and the policies (corral.agent.service).

Settings come from a TOML file (``--config``, default /etc/corral/corral.toml, which may be
missing; corral.agent.config); a flag given on the command line overrides its key, also
across reloads. ``--check-config`` validates the file, the policy and the web config, prints
what would run, and starts nothing. At start the agent moves into a leaf child of its cgroup
(``--cgroup-leaf``, corral.agent.leaf) before any thread starts.

Without a policy (or with ``--no-enforce``) it polls every cgroup under the cgroup2 root (or
``--subtree``) each ``--interval``. With one, the enforcement loop (enforce.loop) does the
polling at the policy's tick, and early when a PSI trigger fires: each snapshot it polls is
published to the exporter, so one collector serves both and the enforcer's metrics
(corral_enforcer_*) come with every scrape. /metrics, /healthz, /api/v1/{snapshot,history,
audit} and a landing page are served on ``--listen`` (default 127.0.0.1:9847).

Logs go to stderr one line per event; under systemd (stderr connected to the journal,
$JOURNAL_STREAM) each line starts with its sd-daemon priority, ``<6>`` for info, which
journald turns into the entry's priority and strips.

Exit status: 0 after a signal (and for a valid --check-config), 1 when the cgroup root cannot
be read, the address cannot be bound or the audit log or recording cannot be opened, 2 for bad
options, a configuration, --web-config or policy that does not validate.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click
from click.core import ParameterSource

from corral.agent.config import Key, load_config
from corral.agent.leaf import DEFAULT_LEAF, enter_leaf
from corral.agent.plan import load_policy_of, summary
from corral.agent.service import Service, StartError
from corral.cli.durations import parse_duration
from corral.cli.selection import collector_options
from monitor.exporter import DEFAULT_HOST, DEFAULT_PORT
from monitor.exporter.server import parse_listen
from monitor.exporter.webconfig import WebConfig, WebConfigError, load_web_config
from runtime.cgroupfs import CgroupError, CgroupFS
from runtime.cgroupfs.openfiles import FD_RESERVE, raise_fd_rlimit
from runtime.syscalls import set_mmap_threshold

log = logging.getLogger("corral.serve")
MMAP_THRESHOLD = 128 * 1024  # glibc's default, made fixed (runtime.syscalls.set_mmap_threshold)
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
# Each option's key in the configuration file, for the flags given on the command line.
KEYS: dict[str, tuple[Key, str]] = {
    "policy_path": (("enforcer", "policy"), "--policy"),
    "dry_run": (("enforcer", "dry_run"), "--dry-run"),
    "audit_log": (("enforcer", "audit_log"), "--audit-log"),
    "listen": (("listen",), "--listen"),
    "interval": (("interval",), "--interval"),
    "cgroup_root": (("collector", "cgroup_root"), "--cgroup-root"),
    "subtree": (("collector", "subtree"), "--subtree"),
    "include": (("collector", "include"), "--include"),
    "exclude": (("collector", "exclude"), "--exclude"),
    "max_depth": (("collector", "max_depth"), "--max-depth"),
    "fd_limit": (("collector", "fd_limit"), "--fd-limit"),
    "recheck_every": (("collector", "recheck_every"), "--recheck-every"),
    "web_config": (("web_config",), "--web-config"),
    "log_level": (("log_level",), "--log-level"),
    "record": (("record", "path"), "--record"),
    "cgroup_leaf": (("cgroup_leaf",), "--cgroup-leaf"),
}


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
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The configuration file (default /etc/corral/corral.toml, if it exists).",
)
@click.option(
    "--check-config", is_flag=True, help="Validate the configuration and policy; start nothing."
)
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
@click.option("--record", metavar="PATH", help="Record every poll to PATH ('' for none).")
@click.option(
    "--cgroup-leaf",
    default=DEFAULT_LEAF,
    show_default=True,
    metavar="NAME",
    help="Move into this child of the agent's cgroup at start ('' to stay).",
)
@click.pass_context
def serve(
    ctx: click.Context, /, config_path: str | None, check_config: bool, **options: Any
) -> None:
    """Run the agent (collector, exporter, API, enforcer) until SIGTERM or SIGINT; SIGHUP
    reloads the configuration and the policy."""
    overrides = _overrides(ctx, options)
    config, source = _fail_2(lambda: load_config(config_path, overrides))
    policy = _fail_2(lambda: load_policy_of(config))
    web = _web_config(config.web_config)
    if check_config:
        try:
            root = config.collector.cgroup_root
            fs = CgroupFS(root) if root else CgroupFS.discover()
        except CgroupError as e:
            _exit_2(f"collector.cgroup_root: {e}")
        click.echo(summary(config, source, policy, web, str(fs.root)))
        return
    setup_logging(config.log_level)
    moved, what = enter_leaf(config.cgroup_leaf)  # first: before any thread starts
    failed = not moved and what.startswith("cannot")
    log.log(logging.WARNING if failed else logging.INFO if moved else logging.DEBUG, "%s", what)
    raise_fd_rlimit(config.collector.fd_limit + FD_RESERVE)
    # Each scrape of a new poll builds a body of a few MB: those buffers must go back to the
    # kernel when the next poll replaces them, not stay in the heap as RSS.
    set_mmap_threshold(MMAP_THRESHOLD)
    try:
        root = config.collector.cgroup_root
        fs = CgroupFS(root) if root else CgroupFS.discover()
        service = Service(config, config_path, source, overrides, policy, web, fs)
    except (CgroupError, StartError) as e:
        raise click.ClickException(str(e)) from None
    service.run()


def _overrides(ctx: click.Context, options: dict[str, Any]) -> dict[Key, tuple[str, object]]:
    """The flags given on the command line, as (key path -> (flag, value))."""
    given = {
        name
        for name in options
        if ctx.get_parameter_source(name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    if "no_enforce" in given and given & {"policy_path", "dry_run", "audit_log"}:
        raise click.UsageError("--no-enforce runs no enforcer: drop --policy/--dry-run/--audit-log")
    out: dict[Key, tuple[str, object]] = {}
    if "no_enforce" in given:
        out[("enforcer", "enabled")] = ("--no-enforce", False)
    for name in given - {"no_enforce"}:
        key, flag = KEYS[name]
        value = options[name]
        if name == "listen":
            try:
                parse_listen(value)
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint=flag) from None
        elif name == "interval":
            value = parse_duration(value, flag, 0.1, 3600)
        elif name == "record" and value == "":
            value = None
        out[key] = (flag, value)
    return out


def _fail_2(load: Any) -> Any:
    """``load()``, or its ConfigError/PolicyError printed and exit status 2."""
    from enforce.policy.toml_lines import LocatedError

    try:
        return load()
    except LocatedError as e:
        _exit_2(str(e))


def _exit_2(message: str) -> None:
    click.echo(f"corral serve: {message}", err=True)
    sys.exit(2)


def _web_config(path: str | None) -> WebConfig | None:
    if path is None:
        return None
    try:
        return load_web_config(path)
    except WebConfigError as e:
        raise click.BadParameter(str(e), param_hint="--web-config") from None
