"""`corral run`, `exec`, `stop`, `kill` and `update`: docker's options and exit statuses.

Exit status: the container's (or the exec'd command's); 125 when corral itself fails (bad
option, missing controller, unknown container), 126 when the command cannot be executed,
127 when it is not found. Errors go to stderr as "corral <verb>: MESSAGE".

The runtime is imported inside the verbs, not here: `corral run` first launches the
container's shim (runtime.container.launch, which imports only os), so that the shim's
start overlaps the CLI's imports of the spec, state, cgroup and OCI modules.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from runtime.container.defaults import DEFAULT_PARENT, EXIT_FAILED, STATE_DIR
from runtime.container.launch import Launched, launch

if TYPE_CHECKING:
    from runtime.container.state import Container

STATE_DIR_ENV = "CORRAL_STATE_DIR"
F = TypeVar("F", bound=Callable[..., Any])
FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip
_RUN = {"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]}


def state_dir_option(f: F) -> F:
    """``--state-dir DIR``, from CORRAL_STATE_DIR when not given, else /run/corral (shared
    by every container verb; corral.cli.containers re-exports it)."""
    option = click.option(
        "--state-dir",
        envvar=STATE_DIR_ENV,
        default=STATE_DIR,
        show_default=True,
        type=click.Path(file_okay=False),
        help=f"Where container state lives (env {STATE_DIR_ENV}).",
    )
    return option(f)


def command_args(command: tuple[str, ...]) -> tuple[str, ...]:
    """CMD [ARG...] without the "--" that separates it (click keeps it once options stop)."""
    return command[1:] if command[:1] == ("--",) else command


def leave(code: int) -> NoReturn:
    """Exit with ``code`` once stdout and stderr are flushed, without the interpreter's
    teardown (module and object finalisation: ~10 ms of a foreground run's start-to-exit,
    with nothing to clean up: the shim has recorded or removed the container)."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # the reader went away, or the stream was closed
            stream.flush()
    os._exit(code)


def fail(verb: str, message: object, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"corral {verb}: {message}", err=True)
    sys.exit(code)


@contextmanager
def errors(verb: str) -> Iterator[None]:
    """Every expected failure as one line on stderr and its exit status."""
    try:
        yield
    except Exception as e:
        from runtime.cgroupfs import CgroupError
        from runtime.container.lifecycle import ContainerError
        from runtime.container.process import SetupError

        if isinstance(e, (ContainerError, SetupError)):
            fail(verb, e, e.code)
        if isinstance(e, (ValueError, LookupError, CgroupError, OSError)):
            fail(verb, e)
        raise


def limit_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The cgroup limit options shared by run and update."""
    options = [
        click.option("--memory", "-m", help="Memory limit (memory.max), e.g. 512m."),
        click.option("--memory-high", help="Throttling threshold (memory.high)."),
        click.option("--memory-swap", help="Memory plus swap (-1: unlimited swap)."),
        click.option("--cpus", help="CPUs (cpu.max), e.g. 1.5."),
        click.option("--cpu-weight", help="cpu.weight, 1..10000."),
        click.option("--cpuset-cpus", help="CPUs allowed, e.g. 0-1,3."),
        click.option("--pids-limit", help="Process limit (pids.max); -1 unlimited."),
    ]
    for kind in ("read-bps", "write-bps", "read-iops", "write-iops"):
        options.append(
            click.option(
                f"--device-{kind}", multiple=True, metavar="DEVICE:RATE", help=f"io.max {kind}."
            )
        )
    for option in reversed(options):
        f = option(f)
    return f


@click.command("run", context_settings=_RUN)
@click.argument("rootfs", required=False)
@click.argument("command", nargs=-1)
@click.option("--bundle", metavar="DIR", help="Run an OCI bundle (config.json) instead.")
@click.option("--name", help="Container name (unique).")
@click.option("-d", "--detach", is_flag=True, help="Print the id and leave it running.")
@click.option("--rm", is_flag=True, help="Remove the container when it exits.")
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Set (or pass with K) a variable.")
@click.option("-w", "--workdir", help="Working directory in the container.")
@click.option("-u", "--user", metavar="UID[:GID]", help="Run as this uid and gid.")
@click.option("--hostname", help="Hostname in the container's uts namespace.")
@click.option("-v", "--volume", multiple=True, metavar="SRC:DST[:ro]", help="Bind mount.")
@click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only.")
@click.option("--label", multiple=True, metavar="K=V", help="Label (repeatable).")
@click.option("--init", is_flag=True, help="Run a minimal init as PID 1 (reaps, forwards).")
@limit_options
@click.option("--userns", default="host", show_default=True, help="auto (mapped ids) or host.")
@click.option(
    "--time-offset", multiple=True, metavar="monotonic=S,boottime=S", help="Clock offsets."
)
@click.option(
    "--network", help="bridge (root's default: corral0 with NAT), none (loopback only) or host; "
    "CORRAL_NETWORK sets the default.",
)  # fmt: skip
@click.option(
    "-p", "--publish", multiple=True, metavar="[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]",
    help="Publish a container port on the host (127.0.0.1 included); --network bridge.",
)  # fmt: skip
@click.option("--cap-add", multiple=True, help="Add a capability (or ALL).")
@click.option("--cap-drop", multiple=True, help="Drop a capability (or ALL).")
@click.option(
    "--cgroup-parent", envvar="CORRAL_CGROUP_PARENT", default=DEFAULT_PARENT, show_default=True,
    help="Parent cgroup of the containers' cgroups.",
)  # fmt: skip
@state_dir_option
def run_cmd(
    rootfs: str | None, command: tuple[str, ...], bundle: str | None, state_dir: str,
    cgroup_parent: str, **options: Any,
) -> None:  # fmt: skip
    """Run COMMAND in a new container on ROOTFS: corral run [OPTIONS] ROOTFS -- CMD [ARG...]
    (or corral run --bundle DIR [--name ID] [-d] [--rm]: an OCI bundle, created and started)"""
    if bundle is None and (rootfs is None or not command):
        raise click.UsageError("missing ROOTFS and COMMAND (or give --bundle DIR)")
    with errors("run"):
        shim = launch(state_dir, attach=not options["detach"], rm=options["rm"])
    try:
        if bundle is not None:
            from corral.cli.oci import run_bundle

            run_bundle(bundle, rootfs, command, state_dir, cgroup_parent, options, shim)
        run(rootfs or "", command, state_dir, cgroup_parent, options, shim)
    finally:
        shim.cancel()  # nothing to do once the container was handed to it


def run(
    rootfs: str, command: tuple[str, ...], state_dir: str, cgroup_parent: str,
    options: dict[str, Any], shim: Launched,
) -> None:  # fmt: skip
    """`corral run ROOTFS CMD`: the container made and handed to ``shim``."""
    from runtime.container import lifecycle
    from runtime.container.cgroup import ContainerCgroups
    from runtime.container.spec import build_spec, default_network
    from runtime.container.state import StateStore
    from runtime.network import check_publish

    with errors("run"):
        options["network"] = options["network"] or default_network()
        spec = build_spec(rootfs=rootfs, command=command_args(command), **options)
        check_publish(spec.publish, state_dir)  # a port taken: refused before anything exists
        store, cgroups = StateStore(state_dir), ContainerCgroups(parent=cgroup_parent)
        forwarder = None if spec.detach else Forwarder()  # from before the output can flow
        started = lifecycle.run(spec, store, cgroups, attach=not spec.detach, launched=shim)
    if forwarder is None:
        click.echo(started.container.id)
        return
    forwarder.started(started.container)
    leave(lifecycle.wait_exit(store, started))


class Forwarder:
    """Sends FORWARDED signals to the container's PID 1; those that arrive while it starts
    are held and sent once it runs."""

    def __init__(self) -> None:
        self.container: Container | None = None
        self.pending: list[int] = []
        for sig in FORWARDED:
            signal.signal(sig, self.handle)

    def handle(self, sig: int, _frame: FrameType | None) -> None:
        if self.container is None:
            self.pending.append(sig)
        else:  # imported already by whoever started the container
            from runtime.container.lifecycle import send_signal

            send_signal(self.container, sig)

    def started(self, container: Container) -> None:
        from runtime.container.lifecycle import send_signal

        self.container = container
        while self.pending:
            send_signal(container, self.pending.pop(0))


@click.command("exec", context_settings=_RUN)
@click.argument("container")
@click.argument("command", nargs=-1, required=True)
@click.option("-e", "--env", multiple=True, metavar="K=V", help="Set (or pass with K) a variable.")
@click.option("-w", "--workdir", help="Working directory (default: the container's).")
@click.option("-u", "--user", metavar="UID[:GID]", help="Run as this uid and gid.")
@state_dir_option
def exec_cmd(
    container: str, command: tuple[str, ...], env: tuple[str, ...], workdir: str | None,
    user: str | None, state_dir: str,
) -> None:  # fmt: skip
    """Run COMMAND in the running CONTAINER: corral exec [OPTIONS] NAME -- CMD [ARG...]"""
    from runtime.container import exec as container_exec
    from runtime.container import lifecycle
    from runtime.container.cgroup import ContainerCgroups
    from runtime.container.state import StateStore
    from runtime.security.capabilities import parse_user

    with errors("exec"):
        if workdir is not None and not workdir.startswith("/"):
            raise ValueError(f"-w/--workdir {workdir!r}: not an absolute path")
        store = StateStore(state_dir)
        found = lifecycle.running(store, container)
        cgroups = ContainerCgroups()
        cgroup_dir = str(cgroups.fs.path(found.cgroup))
        who = None if user is None else parse_user(user)
        argv = command_args(command)
        plan = container_exec.plan(found, cgroup_dir, argv, env=env, workdir=workdir, user=who)
        code = container_exec.run(plan)
    sys.exit(code)


@click.command("stop")
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait after SIGTERM before cgroup.kill.")  # fmt: skip
@state_dir_option
def stop_cmd(containers: tuple[str, ...], timeout: float, state_dir: str) -> None:
    """SIGTERM each container's PID 1, then cgroup.kill after the timeout."""
    from runtime.container import lifecycle
    from runtime.container.cgroup import ContainerCgroups
    from runtime.container.state import StateStore

    with errors("stop"):
        if timeout < 0:
            raise ValueError(f"-t/--time {timeout:g}: allowed 0 or more seconds")
        store = StateStore(state_dir)
        for ref in containers:
            lifecycle.stop(store, ContainerCgroups(), ref, timeout)
            click.echo(ref)


@click.command("kill")
@click.argument("containers", nargs=-1, required=True)
@click.option("-s", "--signal", "sig", default="KILL", show_default=True,
              help="Signal name or number.")  # fmt: skip
@state_dir_option
def kill_cmd(containers: tuple[str, ...], sig: str, state_dir: str) -> None:
    """Send a signal to each container's PID 1."""
    from runtime.container import lifecycle
    from runtime.container.state import StateStore

    with errors("kill"):
        number = lifecycle.parse_signal(sig)
        store = StateStore(state_dir)
        for ref in containers:
            lifecycle.kill(store, ref, number)
            click.echo(ref)


@click.command("update")
@click.argument("containers", nargs=-1, required=True)
@limit_options
@state_dir_option
def update_cmd(containers: tuple[str, ...], state_dir: str, **options: Any) -> None:
    """Change the cgroup limits of containers (running or not) in place."""
    from runtime.container import lifecycle
    from runtime.container.cgroup import ContainerCgroups
    from runtime.container.limits import parse_limits
    from runtime.container.state import StateStore

    with errors("update"):
        limits = parse_limits(update=True, **options)
        if not limits.asked():
            raise ValueError("no limit given: pass --memory, --cpus, --pids-limit, ...")
        store = StateStore(state_dir)
        for ref in containers:
            lifecycle.update(store, ContainerCgroups(), ref, limits)
            click.echo(ref)
