"""`corral oci create|start|state|kill|delete`: the OCI runtime command line (runc's verbs).

Errors go to stderr as "corral oci VERB: MESSAGE" with exit status 1, as runc's; a verb
asked of a container in the wrong status names that status and changes nothing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from corral.cli.container_run import state_dir_option
from runtime.cgroupfs import CgroupError
from runtime.container.cgroup import DEFAULT_PARENT
from runtime.container.launch import Launched
from runtime.container.lifecycle import ContainerError, parse_signal, wait_exit
from runtime.container.process import EXIT_FAILED, SetupError
from runtime.container.spec import generate_name
from runtime.container.state import StateStore
from runtime.oci import lifecycle
from runtime.oci.state import OciError, state_json


@contextmanager
def errors(verb: str) -> Iterator[None]:
    """Every expected failure as one line on stderr, exit status 1."""
    try:
        yield
    except (OciError, ContainerError, SetupError, CgroupError) as e:
        click.echo(f"corral oci {verb}: {e}", err=True)
        sys.exit(1)
    except (ValueError, LookupError, OSError) as e:
        click.echo(f"corral oci {verb}: {e}", err=True)
        sys.exit(1)


@click.group("oci")
def oci() -> None:
    """OCI runtime interface: run bundles (config.json + rootfs) as runc does."""


@oci.command("create")
@click.argument("container_id")
@click.argument("bundle", required=False)
@click.option("-b", "--bundle", "bundle_option", help="The bundle directory (default: .).")
@click.option("--pid-file", help="Write PID 1's host pid to this file.")
@click.option(
    "--cgroup-parent", envvar="CORRAL_CGROUP_PARENT", default=DEFAULT_PARENT, show_default=True,
    help="The cgroup under which PARENT/ID is made when config.json has no linux.cgroupsPath.",
)  # fmt: skip
@state_dir_option
def create_cmd(
    container_id: str, bundle: str | None, bundle_option: str | None, pid_file: str | None,
    cgroup_parent: str, state_dir: str,
) -> None:  # fmt: skip
    """Set up CONTAINER_ID from BUNDLE; its process waits for `corral oci start`."""
    with errors("create"):
        if bundle is not None and bundle_option is not None and bundle != bundle_option:
            raise OciError(f"bundle given twice: {bundle} and --bundle {bundle_option}")
        where = bundle or bundle_option or "."
        lifecycle.create(
            container_id, where, StateStore(state_dir), pid_file=pid_file, parent=cgroup_parent
        )


@oci.command("start")
@click.argument("container_id")
@state_dir_option
def start_cmd(container_id: str, state_dir: str) -> None:
    """Run the user's command of the created CONTAINER_ID."""
    with errors("start"):
        lifecycle.start(container_id, StateStore(state_dir))


@oci.command("state")
@click.argument("container_id")
@state_dir_option
def state_cmd(container_id: str, state_dir: str) -> None:
    """Print CONTAINER_ID's runtime-spec state JSON."""
    with errors("state"):
        container = lifecycle.state(container_id, StateStore(state_dir))
    click.echo(json.dumps(state_json(container), indent=2))


@oci.command("kill")
@click.argument("container_id")
@click.argument("signal", default="SIGTERM")
@state_dir_option
def kill_cmd(container_id: str, signal: str, state_dir: str) -> None:
    """Send SIGNAL (name or number, default SIGTERM) to CONTAINER_ID's process."""
    with errors("kill"):
        lifecycle.kill(container_id, StateStore(state_dir), parse_signal(signal))


@oci.command("delete")
@click.argument("container_id")
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@state_dir_option
def delete_cmd(container_id: str, force: bool, state_dir: str) -> None:
    """Remove CONTAINER_ID's cgroup and state (stopped or created; running with --force)."""
    with errors("delete"):
        lifecycle.delete(container_id, StateStore(state_dir), force=force)


# `corral run` options an OCI bundle takes from its config.json instead.
BUNDLE_RUN_OPTIONS = ("name", "detach", "rm", "bundle", "state_dir", "cgroup_parent")


def run_bundle(
    bundle: str, rootfs: str | None, command: tuple[str, ...], state_dir: str,
    cgroup_parent: str, options: Mapping[str, Any], shim: Launched | None = None,
) -> NoReturn:  # fmt: skip
    """`corral run --bundle DIR`: create and start in one, attached like `corral run` (its
    exit status is the container's) or detached with -d (the id printed). The OCI id is
    --name or a generated name; without linux.cgroupsPath the cgroup is PARENT/ID.
    ``shim``: the container's shim, launched ahead by `corral run`."""
    from corral.cli.container_run import Forwarder, fail, leave

    ctx = click.get_current_context()
    given = [
        p.opts[-1] for p in ctx.command.params
        if p.name not in BUNDLE_RUN_OPTIONS and ctx.get_parameter_source(p.name or "")
        not in (ParameterSource.DEFAULT, None)
    ]  # fmt: skip
    if rootfs is not None or command or given:
        extra = ", ".join([*given, *([rootfs] if rootfs else []), *command])
        raise click.UsageError(f"--bundle takes everything from its config.json: not {extra}")
    detach, rm = bool(options["detach"]), bool(options["rm"])
    container_id, store = options["name"] or generate_name(), StateStore(state_dir)
    forwarder = None if detach else Forwarder()
    try:
        started = lifecycle.create(
            container_id, bundle, store, attach=not detach, rm=rm, parent=cgroup_parent,
            launched=shim,
        )  # fmt: skip
        try:
            lifecycle.start(container_id, store)
        except BaseException:
            if started.sync >= 0:
                os.close(started.sync)
            lifecycle.delete(container_id, store, force=True)
            raise
    except (ContainerError, SetupError) as e:
        fail("run", e, e.code)
    except (OciError, CgroupError, ValueError, LookupError, OSError) as e:
        fail("run", e, EXIT_FAILED)
    if forwarder is None:
        click.echo(started.container.id)
        sys.exit(0)
    forwarder.started(started.container)
    leave(wait_exit(store, started))
