"""corral demo's policy (corral/demo/policy.toml, shipped as package data): it validates
as a user's policy file would, and each rule governs exactly the demo container it is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.demo.stage import demo_policy
from corral.demo.workloads import NAMES, POOL, WORKLOADS, io_rule, run_argv
from enforce.policy import PolicyError, load_policies
from enforce.policy.select import assign
from monitor.sample import CgroupSample, HostSample
from monitor.snapshot import CgroupName, build_snapshot

EXPECTED = {
    "demo-cpu-hog": {"cpu_quota": "cpu-hog", "oom_guard": "last-resort"},
    "demo-cache-grower": {"memory_pressure": "cache-grower", "oom_guard": "last-resort"},
    "demo-leak": {"oom_guard": "leak"},
    "demo-fork-storm": {"pids_guard": "fork-storm", "oom_guard": "last-resort"},
    "demo-io-writer": {"limits": "io-writer", "oom_guard": "last-resort"},
    "demo-steady": {"oom_guard": "last-resort"},
}


def demo_snapshot() -> tuple[dict[str, str], object]:
    """Every demo container where `corral demo` puts it, named as the monitor names it, plus
    a stranger under corral/ and the pool (a plain cgroup)."""
    paths = {w.name: f"{w.parent}/{w.name}" for w in WORKLOADS}
    names = {
        p: CgroupName(p, "container", n, labels={"corral.demo": "x"}) for n, p in paths.items()
    }
    names["corral/web"] = CgroupName("corral/web", "container", "web")
    cgroups = {p: CgroupSample(p) for p in ["corral", POOL, "corral/web", *paths.values()]}
    sample = HostSample(1.0, 1.0, cgroups)
    return paths, build_snapshot(None, sample, seq=1, names=names, collect_seconds=0.0)


def test_the_shipped_policy_validates(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(demo_policy("254:0"))
    policy = load_policies(path)
    assert policy.settings.managed_root == "corral"
    assert [r.name for r in policy.rules] == [
        "cpu-hog", "cache-grower", "leak", "fork-storm", "last-resort", "io-writer",
    ]  # fmt: skip
    leak = policy.rules[2].oom_guard
    assert leak is not None and leak.watch == POOL


def test_each_rule_governs_the_container_it_is_for(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(demo_policy("254:0"))
    paths, snapshot = demo_snapshot()
    got: dict[str, dict[str, str]] = {}
    for a in assign(load_policies(path), snapshot):  # type: ignore[arg-type]
        got.setdefault(a.cgroup, {})[a.controller] = a.rule.name
    assert {n: got.get(p, {}) for n, p in paths.items()} == EXPECTED
    assert "corral/web" not in got  # only demo containers
    assert POOL not in got  # the pool is watched, never acted on


def test_without_a_disk_no_io_rule(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(demo_policy(None))
    assert "io-writer" not in [r.name for r in load_policies(path).rules]


def test_io_rule_refuses_a_device_that_is_not_maj_min(tmp_path: Path) -> None:
    for bad in ("vda", "254", "254:0:1", "a:b"):
        with pytest.raises(ValueError, match="MAJ:MIN"):
            io_rule(bad)
    path = tmp_path / "policy.toml"
    path.write_text(demo_policy("254:0").replace("wbps=4M", "wbps=fast"))
    with pytest.raises(PolicyError):
        load_policies(path)


def test_run_argv_for_every_workload() -> None:
    assert len(NAMES) == 6 and all(n.startswith("demo-") for n in NAMES)
    for w in WORKLOADS:
        argv = run_argv("corral", w, "/r", "/d" if w.data else None)
        assert argv[:6] == ["corral", "run", "-d", "--name", w.name, "--network"]
        assert argv[argv.index("--cgroup-parent") + 1] == w.parent
        assert argv[-5:-3] == ["/r", "--"] and argv[-3:-1] == ["sh", "-c"]
        assert ("-v" in argv) == w.data
    leak = next(w for w in WORKLOADS if w.name == "demo-leak")
    argv = run_argv("corral", leak, "/r", "/d")
    # memory.high below memory.max: the leak stalls, it never meets the OOM killer
    assert argv[argv.index("--memory-high") + 1] == "48m"
    assert argv[argv.index("--memory") + 1] == "256m"
    with pytest.raises(ValueError, match="data directory"):
        run_argv("corral", leak, "/r", None)
