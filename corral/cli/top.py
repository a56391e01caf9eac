"""`corral top`: the terminal dashboard (dashboards.tui) over this host, a running agent or
a recording.

Without --url or --replay it polls this host's cgroups in-process (LocalSource: the same
collector as `corral serve`, so the same selection options) and tails the enforcer's audit
log. --url reads an agent's /api/v1 (RemoteSource: shown as disconnected while it is down,
and reconnected). --replay plays a `corral record` file with time travel (ReplaySource).
"""

from __future__ import annotations

import click
from textual.theme import BUILTIN_THEMES

from corral.cli.durations import parse_duration
from corral.cli.selection import collector_options
from dashboards.tui.sources.base import Source

THEMES = sorted(BUILTIN_THEMES)


@click.command("top")
@click.option("--url", metavar="URL", help="Read a running agent: http://HOST:PORT.")
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Play a recording (corral record) with time travel.",
)
@click.option("--interval", default="1s", show_default=True, help="Time between frames (+/-).")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Replay: recording seconds played per second.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="The enforcer's audit log to show (this host only; default /var/log/corral/audit.jsonl).",
)
@click.option(
    "--theme",
    type=click.Choice(THEMES),
    metavar="NAME",
    help="Colours: textual-dark (default), textual-light or another Textual theme.",
)
@collector_options
def top(
    url: str | None,
    replay: str | None,
    interval: str,
    speed: float,
    audit_log: str | None,
    theme: str | None,
    cgroup_root: str | None,
    subtree: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_depth: int | None,
    fd_limit: int,
    recheck_every: int,
) -> None:
    """The terminal dashboard: each cgroup's CPU, memory, io, pids and pressure beside its
    limits, and the enforcer's last action. Press ? in it for the keys."""
    every = parse_duration(interval, "--interval", low=0.1, high=3600)
    if url is not None and replay is not None:
        raise click.UsageError("--url and --replay: give one of them (or neither, for this host)")
    remote_or_replay = url is not None or replay is not None
    selection = cgroup_root or subtree or include or exclude or max_depth is not None
    if remote_or_replay and (selection or audit_log is not None):
        raise click.UsageError(
            "--cgroup-root, --subtree, --include, --exclude, --max-depth and --audit-log "
            "are for this host's collector: not with --url or --replay"
        )
    if replay is None and speed != 1.0:
        raise click.UsageError(f"--speed {speed:g}: only with --replay")
    if url is not None:
        source = _remote(url, every)
    elif replay is not None:
        source = _replay(replay, every, speed)
    else:
        source = _local(
            every,
            audit_log,
            cgroup_root,
            (subtree, include or ("**",), exclude, max_depth, fd_limit, recheck_every),
        )
    from dashboards.tui.app import CorralTop

    CorralTop(source, theme=theme).run()  # the app closes the source when it exits


def _remote(url: str, interval: float) -> Source:
    from dashboards.tui.sources.remote import RemoteSource

    try:
        return RemoteSource(url, interval)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--url") from None


def _replay(path: str, interval: float, speed: float) -> Source:
    from dashboards.tui.sources.replay import ReplaySource
    from monitor.recording import RecordingError

    try:
        return ReplaySource(path, speed, interval=interval)
    except (RecordingError, OSError, ValueError) as e:
        raise click.ClickException(f"--replay {path}: {e}") from None


def _local(
    interval: float,
    audit_log: str | None,
    cgroup_root: str | None,
    selection: tuple[str, tuple[str, ...], tuple[str, ...], int | None, int, int],
) -> Source:
    from dashboards.tui.sources.local import LocalSource
    from enforce.audit import DEFAULT_AUDIT_LOG
    from monitor.collector import CollectorConfig
    from runtime.cgroupfs import CgroupError, CgroupFS
    from runtime.cgroupfs.openfiles import FD_RESERVE, raise_fd_rlimit

    try:
        config = CollectorConfig(*selection)
        fs = CgroupFS(cgroup_root) if cgroup_root else CgroupFS.discover()
        raise_fd_rlimit(selection[4] + FD_RESERVE)
        return LocalSource(fs, interval, audit_log or DEFAULT_AUDIT_LOG, config=config)
    except (ValueError, CgroupError, OSError) as e:
        raise click.ClickException(str(e)) from None
