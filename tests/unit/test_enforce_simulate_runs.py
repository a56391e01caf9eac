"""enforce.simulate: baselines on known inputs, policy runs through the real Engine and
safeguards, scoring, the report and `corral simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.simulate import simulate as simulate_cmd
from enforce.actions import Mode
from enforce.policy.load import load_policy
from enforce.policy.schema import Policy
from enforce.recommend import MEMORY_OPTIONS
from enforce.simulate.baselines import AutopilotBaseline, FixedLimits, VpaBaseline
from enforce.simulate.kernel_model import KernelModel, TickResult
from enforce.simulate.report import simulation_dict, table
from enforce.simulate.run import run_baseline, run_policy, simulate
from enforce.simulate.score import Meter
from enforce.simulate.traces import Trace, Workload, leak
from runtime.cgroupfs.cpu import CpuMax

MIB = 1 << 20
APP = "corral/app"
DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "enforce" / "policies" / "default.toml"


def _trace(ws: list[int], cpu: float = 0.5, cache: int = 0, **kw: object) -> Trace:
    n = len(ws)
    w = Workload(
        APP, tuple(ws), (cache,) * n, (cpu,) * n, (10,) * n, (0.0,) * n, (0.0,) * n,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return Trace("t", 1.0, (w,))


def _policy(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "p.toml"
    path.write_text('[enforcer]\nmanaged_root = "corral"\n\n' + body)
    return load_policy(path)


def _end(size: float) -> float:
    return MEMORY_OPTIONS.bucket_start(MEMORY_OPTIONS.find_bucket(size) + 1)


# -- baselines ------------------------------------------------------------------------------


def test_fixed_limits_never_change() -> None:
    score = run_baseline(leak(), FixedLimits())
    assert score.limit_changes == 0 and score.oom_kills > 0
    assert score.answered == 0 and score.reaction_seconds is None


def test_vpa_applies_its_target_every_minute() -> None:
    trace = _trace([500 * MIB] * 130, cpu=1.0, memory_max=2 << 30, cpu_max=CpuMax(400_000))
    model = KernelModel(trace)
    vpa = VpaBaseline()
    writes = []
    for t in range(trace.ticks):
        snap, _ = model.step(t)
        for cgroup, file, value in vpa.decide(snap, [APP]):
            model.write(cgroup, file, value)
            writes.append((t, file, value))
    # At t = 60 s: memory.max = end of 500 MiB's bucket + 15% (in pages), cpu.max = end of
    # 1.0 core's bucket (1.020790) + 15% = 1.17391 cores; unchanged at t = 120 s.
    mem = -(-int(_end(500 * MIB) * 1.15) // 4096) * 4096
    assert writes == [(60, "memory.max", mem), (60, "cpu.max", CpuMax(117_391, 100_000))]


def test_vpa_raises_after_an_oom_kill() -> None:
    # The first update (t = 60 s) sets memory.max near 300 MiB * 1.15; at 90 s the working
    # set jumps to 700 MiB: OOM-killed until the next update applies the bumped target.
    trace = _trace([300 * MIB] * 90 + [700 * MIB] * 210, memory_max=2 << 30)
    score = run_baseline(trace, VpaBaseline())
    assert score.oom_kills >= 1
    assert score.answered >= 1  # the OOM episode was answered by a raise of memory.max


def test_autopilot_sets_peak_and_p95_at_window_end() -> None:
    ws = [300 * MIB] * 100 + [400 * MIB] * 100 + [350 * MIB] * 101
    trace = _trace(ws, cpu=0.5, memory_max=2 << 30, cpu_max=CpuMax(400_000))
    model = KernelModel(trace)
    auto = AutopilotBaseline(window_seconds=300.0)
    writes: list[tuple[int, str, object]] = []
    for t in range(trace.ticks):
        snap, _ = model.step(t)
        writes.extend((t, f, v) for _, f, v in auto.decide(snap, [APP]))
    # The first window closes 300 s after the first snapshot, at tick 300: S_max = end of the
    # 400 MiB peak's 5% bucket (in pages); S_p95 = end of 0.5 core's bucket.
    mem = -(-int(_end(400 * MIB)) // 4096) * 4096
    assert writes == [(300, "memory.max", mem), (300, "cpu.max", CpuMax(50_567, 100_000))]


# -- policy runs through the Engine ----------------------------------------------------------


def test_memory_pressure_policy_squeezes_cache_through_the_engine(tmp_path: Path) -> None:
    policy = _policy(tmp_path, '[[rule]]\nname = "mp"\nselect = { kind = "container" }\n'
                     "[rule.memory_pressure]\n")  # fmt: skip
    trace = _trace([300 * MIB] * 300, cache=300 * MIB, memory_max=2 << 30)
    score = run_policy(trace, policy)
    assert score.oom_kills == 0
    assert score.changes_by_file.get("memory.high", 0) > 5
    assert score.memory_slack is not None and score.memory_slack < 0.05


def test_refused_memory_max_is_counted_and_not_applied(tmp_path: Path) -> None:
    # A static memory.max of 200M below 300 MiB in use: the safeguard refuses it every tick.
    policy = _policy(tmp_path, '[[rule]]\nname = "cap"\n[rule.limits]\nmemory_max = "200M"\n')
    score = run_policy(_trace([300 * MIB] * 20, memory_max=1 << 30), policy)
    assert score.refusals >= 1 and score.limit_changes == 0 and score.oom_kills == 0


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    policy = _policy(tmp_path, '[[rule]]\nname = "mp"\nmode = "dry-run"\n'
                     "[rule.memory_pressure]\n")  # fmt: skip
    assert policy.rules[0].mode is Mode.DRY_RUN
    score = run_policy(_trace([300 * MIB] * 60, cache=300 * MIB, memory_max=2 << 30), policy)
    assert score.limit_changes == 0


def test_default_policy_runs_against_every_baseline() -> None:
    sim = simulate(leak(seconds=600), load_policy(DEFAULT_POLICY))
    assert [s.policy for s in sim.scores] == ["corral", "fixed", "vpa", "autopilot"]
    data = simulation_dict(sim)
    assert data["ticks"] == 600 and len(data["results"]) == 4
    text = table([sim])
    assert text.splitlines()[0] == "trace leak (600 ticks of 1 s)"
    assert "OOM kills" in text and "autopilot" in text


# -- scoring ----------------------------------------------------------------------------------


def test_meter_slack_and_reaction_time() -> None:
    meter = Meter(dt=1.0)
    calm = TickResult(memory_limit=1000.0, cpu_limit=2.0, cpu_used=1.0)
    stalled = TickResult(memory_limit=1000.0, cpu_limit=2.0, cpu_used=1.0, memory_stall=0.5)
    meter.tick(0, {APP: calm}, {APP: 750})
    meter.tick(1, {APP: stalled}, {APP: 1000})
    meter.tick(2, {APP: stalled}, {APP: 1000})
    meter.write(2, APP, "memory.high", 1000, 1500)  # raised two ticks after the onset
    meter.write(2, APP, "memory.high", 1500, 1500)  # not a change
    score = meter.score("p", "t")
    assert score.memory_slack == pytest.approx((0.25 + 0 + 0) / 3, abs=1e-4)
    assert score.cpu_slack == 0.5
    assert score.limit_changes == 1 and score.answered == 1 and score.episodes == 1
    assert score.reaction_seconds == 2.0  # from the start of tick 1 to the write after tick 2


# -- corral simulate ----------------------------------------------------------------------------


def test_cli_bad_trace_lists_the_allowed_names() -> None:
    result = CliRunner().invoke(
        simulate_cmd, ["--policy", str(DEFAULT_POLICY), "--trace", "synthetic:nope"]
    )
    assert result.exit_code == 2
    assert "synthetic:nope" in result.output
    assert "synthetic:diurnal, synthetic:step, synthetic:leak, synthetic:spiky_batch" in (
        result.output.replace("\n", " ")
    )


def test_cli_bad_policy_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nname = 'x'\n[rule.limits]\nmemory_max = 'lots'\n")
    result = CliRunner().invoke(simulate_cmd, ["--policy", str(bad), "--trace", "synthetic:step"])
    assert result.exit_code == 1 and "bad.toml" in result.output


def test_cli_json_without_baselines() -> None:
    result = CliRunner().invoke(
        simulate_cmd,
        ["--policy", str(DEFAULT_POLICY), "--trace", "synthetic:fork_storm", "--json",
         "--no-baselines"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["trace"] == "fork_storm" and data["cgroups"] == ["corral/forky", "corral/neighbour"]
    assert [r["policy"] for r in data["results"]] == ["corral"]
    assert data["results"][0]["fork_failures"] > 0  # pids_guard holds the storm
