"""`corral simulate --policy FILE --trace RECORDING|synthetic:NAME`: replay a trace through a
policy's decisions against a model of the kernel, side by side with the baselines (fixed
manual limits, the VPA recommender, an Autopilot-style moving window).

Nothing is written to any cgroup: the kernel is enforce.simulate.kernel_model.
"""

from __future__ import annotations

import json

import click

from enforce.simulate.baselines import BASELINES


@click.command("simulate")
@click.option(
    "--policy",
    "policy_path",
    required=True,
    help="A policy TOML file, or a directory of them (merged as `corral enforce` does).",
)
@click.option(
    "--trace",
    "trace_spec",
    required=True,
    help="A `corral record` recording, or synthetic:NAME (diurnal, step, leak, spiky_batch, "
    "fork_storm).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option(
    "--baselines/--no-baselines",
    default=True,
    show_default=True,
    help=f"Also run the baselines: {', '.join(BASELINES)}.",
)
def simulate(policy_path: str, trace_spec: str, as_json: bool, baselines: bool) -> None:
    """Replay a trace through a policy and score it: slack, OOM kills, throttled seconds,
    limit changes and reaction time."""
    from enforce.policy.load import PolicyError, load_policies
    from enforce.simulate.report import simulation_dict, table
    from enforce.simulate.run import simulate as run
    from enforce.simulate.traces import TraceError, load_trace
    from monitor.recording import RecordingError

    try:
        policy = load_policies(policy_path)
    except (PolicyError, OSError) as e:
        raise click.ClickException(str(e)) from None
    try:
        trace = load_trace(trace_spec)
    except (TraceError, RecordingError, OSError) as e:
        raise click.BadParameter(str(e), param_hint="--trace") from None
    if not trace.workloads:
        raise click.BadParameter(
            f"trace {trace_spec!r}: no cgroup with memory and CPU figures in it",
            param_hint="--trace",
        )
    result = run(trace, policy, baselines=tuple(BASELINES) if baselines else ())
    if as_json:
        click.echo(json.dumps(simulation_dict(result), indent=2))
    else:
        click.echo(table([result]))
