"""`corral policy check|plan|recommend` (corral.cli.policy), through click's runner; plan and
recommend also against the host's real cgroup2 and a real recording."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from test_enforce_controllers_support import G, M, cg, history, host

from corral.cli.policy import plan_rows, policy
from enforce.policy import load_policy
from monitor.recording import RecordingWriter
from runtime.cgroupfs.formats import MAX

DEFAULT = str(Path(__file__).resolve().parents[2] / "enforce" / "policies" / "default.toml")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(policy, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_summarises_rules() -> None:
    code, out, _ = run("check", DEFAULT)
    assert code == 0
    assert out.splitlines() == [
        f"{DEFAULT}: 1 rule(s); managed root 'corral', tick 1 s, on exit leave",
        "  1. containers [enforce] kind=container: memory_pressure, cpu_quota, pids_guard, "
        "oom_guard",
    ]


def test_check_exits_2_with_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "a"\n[rule.cpu_quota]\nmin = "x"\nspeed = 1\n')
    code, out, err = run("check", str(bad))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"corral policy check: {bad}:4: rule[0].cpu_quota.min: bad value 'x': allowed: cores "
        "like 0.5 or 2, QUOTA/PERIOD in microseconds like 50000/100000, or 'max'",
        f"corral policy check: {bad}:5: rule[0].cpu_quota.speed: unknown key: allowed keys "
        "min, max, target_throttled, raise_after, step_up, idle_below, lower_after, step_down, "
        "percentile, window, margin, cooldown, period_us, min_step, raise_to_demand, "
        "raise_cooldown, lower_from_idle",
    ]


def test_plan_rows_mark_refusals(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[rule]]\nname = "m"\nselect = { cgroup = "corral/*" }\nlimits = { memory_max = "1G" }\n'
    )
    h = history(
        host(0, cg("corral/ok", current=100 * M, memory_max=MAX), cg("corral/big", current=2 * G))
    )
    rows, notes = plan_rows(load_policy(path), h, own="corral/agent")
    assert [(r["cgroup"], r["new"], r["refused"]) for r in rows] == [
        (
            "corral/big",
            "1073741824",
            "memory.max 1073741824 is below memory.current "
            "2147483648 + margin 67108864 (the kernel would reclaim then OOM-kill; squeeze "
            "memory.high instead)",
        ),
        ("corral/ok", "1073741824", None),
    ]
    assert rows[1]["old"] == "max" and rows[1]["mode"] == "enforce" and notes == []


def test_plan_on_the_host(tmp_path: Path, host_cgroup2: Path) -> None:
    code, out, err = run("plan", DEFAULT, "--gap", "100ms", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"changes", "notes"}
    # This host's cgroup2 has no controllers: no limit file exists, so nothing to change.
    assert doc["changes"] == []
    code, out, _ = run("plan", DEFAULT, "--gap", "100ms")
    assert code == 0 and out.startswith("no changes: ")


def test_recommend_from_a_recording(tmp_path: Path) -> None:
    rec = tmp_path / "r.rec"
    with RecordingWriter(rec) as writer:
        for t in range(30):
            sample = cg("corral/web", current=(200 + t) * M, cpu=(t * 5_000_000, 0, 0))
            writer.write(host(t * 10, sample), {})
    code, out, err = run("recommend", "--recording", str(rec), "--json")
    assert code == 0, err
    got = {(r["cgroup"], r["resource"]): r for r in json.loads(out)}
    assert set(got) == {("corral/web", "memory"), ("corral/web", "cpu")}
    assert got[("corral/web", "memory")]["unit"] == "bytes"
    assert 200 * M < got[("corral/web", "memory")]["target"] < 300 * M
    assert 0.4 < got[("corral/web", "cpu")]["target"] < 0.7
    code, out, _ = run("recommend", "--recording", str(rec))
    assert code == 0 and out.splitlines()[0].split() == [
        "CGROUP",
        "RESOURCE",
        "LOWER",
        "TARGET",
        "UPPER",
    ]
