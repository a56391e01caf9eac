"""`corral enforce --dry-run` changes no kernel file yet logs the same decisions as the live
run on the same cgroups, which then does change them (both through the command itself)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from enforce_workloads import GROWER
from kernel_harness import Figures, MiB, Spawn, python_argv

from corral.cli.enforce import enforce_cmd
from enforce.actions import AuditEntry, Mode, Outcome
from enforce.audit import read_audit
from runtime.cgroupfs import CgroupFS

FILES = ("memory.max", "memory.high", "memory.low", "pids.max", "cpu.max", "cpu.weight")

POLICY = """
[enforcer]
managed_root = "{root}"

[[rule]]
name = "static"
select = {{ cgroup = "{app}" }}

[rule.limits]
memory_max = "256M"
memory_high = "200M"
pids_max = 40
cpu_weight = 50

[[rule]]
name = "quota"
select = {{ cgroup = "{root}/*" }}

[rule.cpu_quota]
min = "0.2"
max = "1.5"
"""


def files(fs: CgroupFS, cgroups: list[str]) -> dict[str, str | None]:
    return {f"{c}/{name}": fs.read(c, name) for c in cgroups for name in FILES}


def decisions(entries: list[AuditEntry]) -> list[tuple[str, str, str, str, str | None, str]]:
    return sorted((e.rule, e.controller, e.cgroup, e.file, e.old, e.new) for e in entries)


def test_dry_run_writes_nothing_and_decides_as_the_live_run(
    fs: CgroupFS, cgroup: str, spawn: Spawn, tmp_path: Path, figures: Figures
) -> None:
    fs.enable_controllers(cgroup, ["cpu", "memory", "pids"])
    app, other = f"{cgroup}/app", f"{cgroup}/other"
    for c in (app, other):
        fs.create(c)
        holder = spawn(python_argv(GROWER), where=c)
        holder.expect("ready", 90)
        holder.send(f"grow {8 * MiB} {8 * MiB} 0")
        holder.expect("grown", 30)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(root=cgroup, app=app))
    runner = CliRunner()
    before = files(fs, [app, other])

    dry_log = tmp_path / "dry.jsonl"
    args = ["--policy", str(policy), "--once", "--audit-log"]
    dry = runner.invoke(enforce_cmd, [*args, str(dry_log), "--dry-run"], catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert files(fs, [app, other]) == before, "the dry run changed a kernel file"
    dry_entries = read_audit(str(dry_log))
    assert dry_entries and all(e.outcome is Outcome.DRY_RUN for e in dry_entries), dry_entries
    assert all(e.mode is Mode.DRY_RUN for e in dry_entries)

    live_log = tmp_path / "live.jsonl"
    live = runner.invoke(enforce_cmd, [*args, str(live_log)], catch_exceptions=False)
    assert live.exit_code == 0, live.output
    live_entries = read_audit(str(live_log))
    assert all(e.outcome is Outcome.APPLIED for e in live_entries), live_entries
    assert decisions(live_entries) == decisions(dry_entries)
    after = files(fs, [app, other])
    changed = sorted(k for k in after if after[k] != before[k])
    figures.note(
        f"dry run: {len(dry_entries)} decisions, 0 files changed; live: the same "
        f"{len(live_entries)} decisions, changed {changed}"
    )
    assert changed == sorted(f"{e.cgroup}/{e.file}" for e in live_entries)
    assert (after[f"{app}/memory.max"] or "").strip() == str(256 * MiB)
    assert (after[f"{app}/pids.max"] or "").strip() == "40"
