"""`corral enforce --policy FILE|DIR [--dry-run]`: the enforcer on its own, in the foreground.

The same loop `corral serve` runs (enforce.loop): poll every cgroup each tick, decide by the
policy, apply through the actuator's safeguards, audit every outcome as JSON lines. SIGINT
and SIGTERM end it after the round in progress, then ``on_exit`` (leave or restore) runs.
Exit status: 0 after a clean stop, 2 for a policy that cannot be used (as `corral policy
check`), 1 for anything else that keeps it from starting.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from enforce.actions import AuditEntry, Outcome
from enforce.audit import AuditLog
from enforce.loop import EnforcementLoop
from enforce.policy import PolicyError, load_policies
from monitor.collector import Collector, CollectorConfig
from runtime.cgroupfs import CgroupError, CgroupFS

POLICY_ERROR_STATUS = 2


class PolicyUnusable(click.ClickException):
    exit_code = POLICY_ERROR_STATUS


@click.command("enforce")
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(exists=False),
    metavar="FILE|DIR",
    help="A policy TOML file, or a directory whose *.toml files are merged in name order.",
)
@click.option("--dry-run", is_flag=True, help="Log every decision; write no kernel file.")
@click.option(
    "--audit-log",
    metavar="PATH",
    help="JSON lines audit log (default: the policy's [enforcer] audit_log).",
)
@click.option("--once", is_flag=True, help="One round (poll, decide, apply), then exit.")
@click.option(
    "--cgroup-root",
    type=click.Path(file_okay=False),
    metavar="PATH",
    help="The cgroup2 mount (default: found in /proc/self/mountinfo).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log each round's decisions to stderr.")
def enforce_cmd(
    policy_path: str,
    dry_run: bool,
    audit_log: str | None,
    once: bool,
    cgroup_root: str | None,
    verbose: bool,
) -> None:
    """Tune cgroup limits by the policy at FILE|DIR until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="corral enforce: %(message)s"
    )
    try:
        policy = load_policies(policy_path)
    except PolicyError as e:
        raise PolicyUnusable(str(e)) from None
    try:
        fs = CgroupFS(cgroup_root) if cgroup_root else CgroupFS.discover()
    except CgroupError as e:
        raise click.ClickException(str(e)) from None
    audit = AuditLog(audit_log if audit_log is not None else policy.settings.audit_log)
    collector = Collector(fs, CollectorConfig())
    loop = EnforcementLoop(policy, fs, audit=audit, dry_run=dry_run, collector=collector)
    mode = "dry run" if dry_run else "enforcing"
    click.echo(
        f"corral enforce: {mode} {len(policy.rules)} rule(s) from {policy.source} on {fs.root};"
        f" audit log {audit.path}",
        err=True,
    )
    try:
        if once:
            _report(loop.run_once())
            loop.close()
        else:
            _run(loop)
    except OSError as e:  # the audit log cannot be written, most likely
        raise click.ClickException(str(e)) from None
    finally:
        collector.close()


def _run(loop: EnforcementLoop) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        click.echo(f"corral enforce: {signal.Signals(signum).name}: stopping", err=True)
        loop.stop(timeout=0)

    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        loop.run()
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
    click.echo(
        f"corral enforce: stopped after {loop.rounds} rounds "
        f"({loop.early_rounds} woken by PSI triggers)",
        err=True,
    )


def _report(entries: list[AuditEntry]) -> None:
    """--once: one line per action on stdout."""
    if not entries:
        click.echo("no action: every selected cgroup is where the policy wants it")
    for e in entries:
        change = f"{e.old} -> {e.new}" if e.old is not None else f"-> {e.new}"
        why = f" ({e.reason})" if e.outcome is not Outcome.APPLIED and e.reason else ""
        click.echo(
            f"{e.outcome.value:<11} {e.rule}/{e.controller} {e.cgroup or '/'} "
            f"{e.file} {change}{why}"
        )
