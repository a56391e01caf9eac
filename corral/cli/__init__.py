"""The `corral` command. Each verb lives in its own module; no business logic here."""

from __future__ import annotations

import click

from corral import __version__
from corral.cli.doctor import doctor
from corral.cli.machine import machine
from corral.cli.record import record_cmd
from corral.cli.rootfs import rootfs
from corral.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
def main() -> None:
    """cgroup v2 containers, monitoring and enforcement for one Linux host."""


main.add_command(machine)
main.add_command(doctor)
main.add_command(record_cmd)
main.add_command(serve)
main.add_command(rootfs)
