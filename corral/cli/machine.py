"""`corral machine run|setup|status`: a throwaway VM with a real cgroup v2 kernel."""

from __future__ import annotations

import json

import click

from runtime.cgroupfs import InvalidLimit
from runtime.machine import MachineError, MachineSpec, find_requirements, run
from runtime.machine.setup import setup as install_requirements


def _forward(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[int, int], ...]:
    out = []
    for value in values:
        host, sep, guest = value.partition(":")
        if not sep or not host.isdigit() or not guest.isdigit():
            raise click.BadParameter(f"{value!r}: expected HOSTPORT:GUESTPORT like 9464:9464")
        out.append((int(host), int(guest)))
    return tuple(out)


@click.group()
def machine() -> None:
    """A throwaway VM with a real cgroup v2 kernel and the host's filesystem."""


@machine.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--memory", default="1G", show_default=True, help="Guest memory, e.g. 2G.")
@click.option("--cpus", default=2, show_default=True, type=int, help="Guest CPUs.")
@click.option("--disk", metavar="SIZE", help="Attach a scratch block device (/dev/vda).")
@click.option(
    "--forward",
    multiple=True,
    callback=_forward,
    metavar="HOST:GUEST",
    help="Forward 127.0.0.1:HOST on the host to GUEST in the machine (TCP).",
)
@click.option("--out", type=click.Path(file_okay=False), help="Host directory the guest may write.")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Set in the guest.")
@click.option("--timeout", type=float, help="Give up (and power off) after SECONDS.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(
    memory: str,
    cpus: int,
    disk: str | None,
    forward: tuple[tuple[int, int], ...],
    out: str | None,
    env: tuple[str, ...],
    timeout: float | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in the machine; exits with its status (125 when the machine failed)."""
    pairs = dict(e.partition("=")[::2] for e in env)
    spec = MachineSpec(memory, cpus, disk, forward, out, pairs, timeout=timeout)
    try:
        status = run(spec, list(command))
    except (MachineError, InvalidLimit) as e:
        click.echo(f"corral machine: {e}", err=True)
        raise SystemExit(125) from None
    raise SystemExit(status)


@machine.command()
def setup() -> None:
    """Install qemu, Debian's kernel, busybox-static and virtme-ng where missing."""
    install_requirements(say=lambda s: click.echo(f"corral machine setup: {s}"))


@machine.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Say whether the machine can run here, and what is missing."""
    req = find_requirements()
    data = {
        "ready": req.ready,
        "qemu": req.qemu,
        "kernel": req.kernel,
        "vng": req.vng,
        "kvm_usable": req.kvm_usable,
        "kvm": req.kvm_detail,
        "missing": req.missing,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            click.echo(f"{key:11} {value}")
    raise SystemExit(0 if req.ready else 1)
