"""`corral ps`, `corral inspect`, `corral rm` and `corral logs`: the containers in the state
directory (runtime.container.state), shown and removed as docker does.

Every command reconciles what it shows with the host first (StateStore.refresh: a running
container whose shim is gone is stopped, "shim died"). Exit status 0, or 1 when a container
is unknown or cannot be removed (the others named are still handled, as docker does); 2 for
bad usage. ``--state-dir`` (or CORRAL_STATE_DIR) picks the state directory;
``state_dir_option`` is shared with the other container verbs. corral/cli/__init__.py lists
the commands.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import click

from corral.cli.container_run import STATE_DIR_ENV as STATE_DIR_ENV
from corral.cli.container_run import state_dir_option as state_dir_option
from runtime import network
from runtime.cgroupfs import CgroupError
from runtime.container.cgroup import ContainerCgroups
from runtime.container.config import spec_to_dict
from runtime.container.limits import limits_to_dict
from runtime.container.logs import LogEntry, LogReader, parse_time
from runtime.container.record import proc_start_time
from runtime.container.state import Container, ContainerNotFound, StateStore, shim_alive

COMMAND_WIDTH = 20  # docker ps truncates COMMAND to 20 characters
SHIM_EXIT_SECONDS = 10.0  # rm -f: how long the shim gets to record the exit after the kill
F = TypeVar("F", bound=Callable[..., Any])


def fail(verb: str, messages: Iterable[str], status: int = 1) -> NoReturn:
    """Each message as "corral VERB: MESSAGE" on stderr, then exit ``status``."""
    for message in messages:
        click.echo(f"corral {verb}: {message}", err=True)
    raise SystemExit(status)


# -- durations and status, as docker prints them -----------------------------------------------


def human_duration(seconds: float) -> str:
    """docker/go-units HumanDuration: "Less than a second", "About a minute", "3 hours"."""
    s = int(seconds)
    minutes, hours = s // 60, int(seconds / 3600 + 0.5)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours < 48:
        return "About an hour" if hours == 1 else f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _since(rfc3339: str | None, now_ns: int) -> float:
    return 0.0 if rfc3339 is None else max(0, now_ns - parse_time(rfc3339)) / 1e9


def status_text(c: Container, now_ns: int) -> str:
    """docker ps STATUS: "Created", "Up 3 minutes", "Exited (137) 2 seconds ago"."""
    if c.status == "created":
        return "Created"
    if c.status == "running":
        return f"Up {human_duration(_since(c.started or c.created, now_ns))}"
    code = "unknown" if c.exit_code is None else str(c.exit_code)
    ago = human_duration(_since(c.finished or c.created, now_ns))
    return f"Exited ({code}) {ago} ago"


def command_text(command: Iterable[str], truncate: bool) -> str:
    text = " ".join(command)
    if truncate and len(text) > COMMAND_WIDTH:
        text = text[: COMMAND_WIDTH - 1] + "…"
    return json.dumps(text, ensure_ascii=False)  # quoted as Go's strconv.Quote does


# -- ps ----------------------------------------------------------------------------------------


def _refreshed(store: StateStore) -> list[Container]:
    out = []
    for c in store.list():
        try:
            out.append(store.refresh(c))
        except ContainerNotFound:
            continue  # removed meanwhile
    for container_id in store.skipped:
        click.echo(f"corral ps: skipped unreadable container state {container_id}", err=True)
    return out


def summary(c: Container, now_ns: int) -> dict[str, Any]:
    """One `ps --json` object."""
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,  # "corral" (corral run) or "oci" (corral oci create / run --bundle)
        "command": list(c.spec.command),
        "created": c.created,
        "status": c.status,
        "status_text": status_text(c, now_ns),
        "pid": c.pid,
        "exit_code": c.exit_code,
        "cgroup": c.cgroup,
        "labels": c.spec.label_map,
    }


def table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell plus three spaces, as docker's tabwriter."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@click.option("--no-trunc", is_flag=True, help="Do not shorten ids and commands.")
@state_dir_option
def ps(show_all: bool, as_json: bool, no_trunc: bool, state_dir: str) -> None:
    """List running containers (all with -a), newest first."""
    now_ns = time.time_ns()
    store = StateStore(state_dir)
    containers = _refreshed(store)
    # [F3] a crash can leave veths, nft rules and leases of containers that are gone
    live = {c.id for c in containers if c.status != "stopped"} | set(store.skipped)
    network.reconcile(state_dir, live)
    shown = [c for c in reversed(containers) if show_all or c.status == "running"]
    if as_json:
        click.echo(json.dumps([summary(c, now_ns) for c in shown], indent=2))
        return
    rows = [["CONTAINER ID", "NAME", "COMMAND", "CREATED", "STATUS", "CGROUP"]]
    for c in shown:
        created = human_duration(_since(c.created, now_ns)) + " ago"
        rows.append(
            [
                c.id if no_trunc else c.short_id,
                c.name,
                command_text(c.spec.command, not no_trunc),
                created,
                status_text(c, now_ns),
                c.cgroup,
            ]
        )
    click.echo(table(rows))


# -- inspect -----------------------------------------------------------------------------------


def _cgroups() -> ContainerCgroups | None:
    try:
        return ContainerCgroups()
    except (CgroupError, OSError):
        return None  # no cgroup2 mount: nothing to read or remove there


def limits_of(c: Container, cgroups: ContainerCgroups | None) -> tuple[str, dict[str, Any]]:
    """("cgroup", the limit files) for a running container, else ("config", the spec's)."""
    if c.status == "running" and cgroups is not None:
        try:
            return "cgroup", cgroups.read_limits(c.cgroup)
        except (CgroupError, OSError):
            pass  # the cgroup went away: say what was asked for
    return "config", limits_to_dict(c.spec.limits)


def inspect_dict(
    c: Container, store: StateStore, cgroups: ContainerCgroups | None
) -> dict[str, Any]:
    """One `inspect --json` object: state, cgroup and limits, the whole config."""
    source, limits = limits_of(c, cgroups)
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,
        "bundle": c.bundle,
        "created": c.created,
        "state": {
            "status": c.status,
            "running": c.status == "running",
            "pid": c.pid,
            "shim_pid": c.shim_pid,
            "exit_code": c.exit_code,
            "oom_killed": c.oom_killed,
            "started": c.started,
            "finished": c.finished,
            "error": c.error,
        },
        "cgroup": {
            "path": c.cgroup,
            "host_path": None if cgroups is None else os.path.join(cgroups.root, c.cgroup),
            "limits_source": source,
            "limits": limits,
        },
        "log_path": store.log_path(c.id),
        "config": spec_to_dict(c.spec),
    }


def inspect_text(d: dict[str, Any], now_ns: int, c: Container) -> str:
    state, cgroup, config = d["state"], d["cgroup"], d["config"]

    def show(value: object) -> str:
        return (
            "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        )

    limits = " ".join(
        f"{k}={json.dumps(v)}" for k, v in cgroup["limits"].items() if v not in (None, [])
    )
    lines = [
        ("ID", d["id"]),
        ("Name", d["name"]),
        ("Status", f"{state['status']} ({status_text(c, now_ns)})"),
        ("PID", show(state["pid"])),
        ("Shim PID", show(state["shim_pid"])),
        ("Exit code", show(state["exit_code"])),
        ("OOM killed", show(state["oom_killed"])),
        ("Error", show(state["error"])),
        ("Created", d["created"]),
        ("Started", show(state["started"])),
        ("Finished", show(state["finished"])),
        ("Cgroup", f"{cgroup['path']} ({show(cgroup['host_path'])})"),
        (f"Limits ({cgroup['limits_source']})", limits or "none"),
        ("Command", " ".join(config["command"])),
        ("Rootfs", config["rootfs"]),
        ("Hostname", config["hostname"]),
        ("User", f"{config['user']['uid']}:{config['user']['gid']}"),
        ("Userns", config["userns"]),
        ("Network", config["network"]),
        ("Log", d["log_path"]),
    ]
    width = max(len(k) for k, _ in lines) + 2
    return "\n".join(f"{k + ':':<{width}}{v}" for k, v in lines)


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per container.")
@state_dir_option
def inspect(names: tuple[str, ...], as_json: bool, state_dir: str) -> None:
    """Show containers' configuration, state, cgroup and limits."""
    store, now_ns, cgroups = StateStore(state_dir), time.time_ns(), _cgroups()
    found: list[tuple[Container, dict[str, Any]]] = []
    missing = []
    for ref in names:
        try:
            c = store.refresh(store.get(ref))
        except ContainerNotFound as e:
            missing.append(str(e))
            continue
        found.append((c, inspect_dict(c, store, cgroups)))
    if as_json:
        click.echo(json.dumps([d for _, d in found], indent=2))
    else:
        click.echo("\n\n".join(inspect_text(d, now_ns, c) for c, d in found))
    if missing:
        fail("inspect", missing)


# -- rm ----------------------------------------------------------------------------------------


class ContainerRunning(RuntimeError):
    """rm without -f of a container that is running."""


def _live(c: Container) -> bool:
    return c.status == "running" or (c.status == "created" and shim_alive(c))


def _wait_shim(c: Container, timeout: float) -> None:
    """Give the shim ``timeout`` seconds to record the exit; then SIGKILL it (if it is still
    the same process)."""
    deadline = time.monotonic() + timeout
    while shim_alive(c):
        if time.monotonic() >= deadline:
            if c.shim_pid is not None and proc_start_time(c.shim_pid) == c.shim_start_time:
                os.kill(c.shim_pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def remove_container(store: StateStore, ref: str, force: bool) -> None:
    """docker rm: refuse a running container unless ``force``, which kills it (cgroup.kill),
    lets the shim record the exit, then removes the cgroup and the state."""
    c = store.refresh(store.get(ref))
    cgroups = _cgroups()
    if _live(c):
        if not force:
            raise ContainerRunning(
                f"container {c.name} ({c.short_id}) is running: stop it first "
                f"(corral stop {c.name}) or use rm -f"
            )
        if cgroups is None:
            raise CgroupError(f"cannot kill container {c.name}: no cgroup2 hierarchy found")
        with store.locked(c.id) as fresh:
            cgroups.kill(fresh.cgroup)
        _wait_shim(c, SHIM_EXIT_SECONDS)
    try:
        with store.locked(c.id) as fresh:
            if cgroups is not None:
                cgroups.remove(fresh.cgroup)
            network.detach(fresh.id, store.root)  # [F3] veth, nft rules, lease
            store.remove(fresh.id)
    except ContainerNotFound:
        pass  # a --rm container's shim removed it meanwhile


@click.command("rm")
@click.option("-f", "--force", is_flag=True, help="Kill a running container, then remove it.")
@click.argument("names", nargs=-1, required=True)
@state_dir_option
def rm(force: bool, names: tuple[str, ...], state_dir: str) -> None:
    """Remove containers: their cgroup, state and log."""
    store, failed = StateStore(state_dir), []
    for ref in names:
        try:
            remove_container(store, ref, force)
        except (ContainerNotFound, ContainerRunning, CgroupError, OSError) as e:
            failed.append(str(e))
            continue
        click.echo(ref)
    if failed:
        fail("rm", failed)


# -- logs --------------------------------------------------------------------------------------


def parse_tail(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise click.BadParameter(
            f"{text!r}: expected a number of lines or 'all'", param_hint="--tail"
        )
    return int(text)


def _stopped(store: StateStore, container_id: str) -> Callable[[], bool]:
    """Whether following should end: the container is not running (as docker, following a
    container that is not running prints what there is and returns) or was removed."""

    def stopped() -> bool:
        try:
            return store.refresh(store.load(container_id)).status != "running"
        except ContainerNotFound:
            return True

    return stopped


def _print(entry: LogEntry, timestamps: bool) -> None:
    stream = sys.stderr if entry.stream == "stderr" else sys.stdout
    stream.write(f"{entry.time} {entry.log}" if timestamps else entry.log)
    stream.flush()


@click.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the container stops.")
@click.option("-n", "--tail", default="all", show_default=True, help="Lines from the end.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with its time.")
@click.argument("name")
@state_dir_option
def logs(follow: bool, tail: str, timestamps: bool, name: str, state_dir: str) -> None:
    """Print a container's stdout and stderr (stderr lines to stderr)."""
    lines = parse_tail(tail)
    store = StateStore(state_dir)
    try:
        c = store.get(name)
    except ContainerNotFound as e:
        fail("logs", [str(e)])
    reader = LogReader(store.log_path(c.id))
    if follow:
        entries = reader.follow(_stopped(store, c.id), tail=lines)
    else:
        entries = reader.entries(tail=lines)
    try:
        for entry in entries:
            _print(entry, timestamps)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if reader.malformed:
        click.echo(
            f"corral logs: skipped {reader.malformed} malformed lines in {reader.path}", err=True
        )
