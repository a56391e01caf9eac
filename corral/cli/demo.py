"""`corral demo`: see corral.demo. Exit status 0 when the demo ran, 1 when it could not
(the message says why), 130 on Ctrl-C (after teardown)."""

from __future__ import annotations

import click

from corral.demo.session import Options, run_demo
from corral.demo.stage import DemoError


def _say(text: str) -> None:
    click.echo(f"corral demo: {text}", err=True)


@click.command("demo")
@click.option(
    "--headless",
    is_flag=True,
    envvar="CORRAL_DEMO_HEADLESS",
    help="No dashboard: run --duration seconds, then print a summary (env CORRAL_DEMO_HEADLESS=1).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=10, max=3600),
    metavar="SECONDS",
    help="How long the workloads run before the headless summary [default: 60].",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9847,
    show_default=True,
    help="The agent's port on 127.0.0.1 (forwarded from the machine when it runs there).",
)
@click.option(
    "--machine",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="Run in `corral machine`: auto = when this host lacks cgroup v2 controllers.",
)
@click.option("--keep", is_flag=True, help="Keep the work directory (policy, audit, logs).")
@click.option("--stage-only", is_flag=True, hidden=True, help="Inside the machine: no viewer.")
@click.option("--rootfs", hidden=True, type=click.Path(file_okay=False), help="With --stage-only.")
def demo(
    headless: bool,
    duration: float | None,
    port: int,
    machine: str,
    keep: bool,
    stage_only: bool,
    rootfs: str | None,
) -> None:
    """Start the agent with a demo policy and containers that show each part of the
    enforcer (a CPU hog, a cache grower, a leak, a fork storm, an io writer, a steady
    service), then open `corral top` on it. Stops and removes everything on the way out."""
    if duration is not None and not headless and not stage_only:
        raise click.UsageError("--duration is for --headless (the dashboard runs until q)")
    if rootfs is not None and not stage_only:
        raise click.UsageError("--rootfs is for --stage-only")
    opts = Options(headless, duration, port, machine, keep, stage_only, rootfs)  # type: ignore[arg-type]
    try:
        run_demo(opts, _say, click.echo)
    except DemoError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        _say("interrupted; everything was stopped and removed")
        raise SystemExit(130) from None
