"""The options that choose which cgroups a collector reads, shared by `corral serve` and
`corral record` so that both select alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from monitor.collector import DEFAULT_RECHECK_EVERY

F = TypeVar("F", bound=Callable[..., object])

DEFAULT_FD_LIMIT = 32768


def collector_options(command: F) -> F:
    """--cgroup-root, --subtree, --include, --exclude, --max-depth, --fd-limit,
    --recheck-every."""
    options = [
        click.option(
            "--cgroup-root",
            type=click.Path(file_okay=False),
            metavar="PATH",
            help="The cgroup2 mount (default: found in /proc/self/mountinfo).",
        ),
        click.option("--subtree", default="", metavar="PATH", help="Only this cgroup and below."),
        click.option(
            "--include", multiple=True, metavar="GLOB", help="Cgroups to read (default **)."
        ),
        click.option("--exclude", multiple=True, metavar="GLOB", help="Cgroups to skip."),
        click.option("--max-depth", type=click.IntRange(min=0), help="Levels below the subtree."),
        click.option(
            "--fd-limit",
            type=click.IntRange(min=0),
            default=DEFAULT_FD_LIMIT,
            show_default=True,
            help="Cgroup files kept open between polls (about 15 per cgroup; 0 reopens each).",
        ),
        click.option(
            "--recheck-every",
            type=click.IntRange(min=1),
            default=DEFAULT_RECHECK_EVERY,
            show_default=True,
            metavar="POLLS",
            help="Limit and event files are read when inotify says they changed, and every "
            "file of a cgroup at least once per this many polls (1: every file every poll).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
