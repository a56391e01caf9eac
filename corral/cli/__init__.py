"""The `corral` command. Each verb lives in its own module; no business logic here.

Verbs are imported only when invoked (click's documented LazyGroup pattern): `corral serve`
then does not carry the dashboard's, the doctor's or the VM tooling's modules in its memory,
and `corral run` starts without importing the monitor.
"""

from __future__ import annotations

import importlib

import click

from corral import __version__

# name -> "module:attribute" of its click command.
COMMANDS = {
    "machine": "corral.cli.machine:machine",
    "doctor": "corral.cli.doctor:doctor",
    "record": "corral.cli.record:record_cmd",
    "serve": "corral.cli.serve:serve",
    "rootfs": "corral.cli.rootfs:rootfs",
    "ps": "corral.cli.containers:ps",
    "inspect": "corral.cli.containers:inspect",
    "rm": "corral.cli.containers:rm",
    "logs": "corral.cli.containers:logs",
    "run": "corral.cli.container_run:run_cmd",
    "exec": "corral.cli.container_run:exec_cmd",
    "stop": "corral.cli.container_run:stop_cmd",
    "kill": "corral.cli.container_run:kill_cmd",
    "update": "corral.cli.container_run:update_cmd",
    "policy": "corral.cli.policy:policy",
    "simulate": "corral.cli.simulate:simulate",
    "enforce": "corral.cli.enforce:enforce_cmd",
    "top": "corral.cli.top:top",
    "oci": "corral.cli.oci:oci",
    "demo": "corral.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from COMMANDS on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="corral")
def main() -> None:
    """cgroup v2 containers, monitoring and enforcement for one Linux host."""
