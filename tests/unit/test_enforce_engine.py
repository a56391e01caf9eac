"""The Engine: assignment of rules to cgroups, state kept between ticks, observe() feedback
(cooldowns from APPLIED, back-off on SKIPPED), triggers and originals."""

from __future__ import annotations

from pathlib import Path

from test_enforce_controllers_support import G, M, cg, entry, history, host, summary

from enforce.actions import Action, Mode, Outcome
from enforce.engine import Engine
from enforce.policy import Policy, load_policy
from monitor.sample import HostSample
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX

W = "corral/web"


def policy(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_policy(path)


MEM = """
[[rule]]
name = "mem"
mode = "MODE"
select = { kind = "container" }
memory_pressure = {}
"""


def mem_host(t: float, high: object, some: int = 0) -> HostSample:
    return host(t, cg("corral"), cg(W, current=1 * G, high=high, mem_some=some))  # type: ignore[arg-type]


def apply(engine: Engine, actions: list[Action], outcome: Outcome) -> None:
    engine.observe([entry(a, outcome) for a in actions])


def test_decide_is_empty_without_history(tmp_path: Path) -> None:
    assert Engine(policy(tmp_path, MEM.replace("MODE", "enforce"))).decide([]) == []


def test_memory_pressure_through_engine_and_originals(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    first = engine.decide(history(mem_host(0, MAX)))
    assert summary(first) == [(W, "memory.high", 1 * G)]
    assert first[0].rule == "mem" and first[0].mode is Mode.ENFORCE
    apply(engine, first, Outcome.APPLIED)
    assert engine.state("mem", "memory_pressure", W).confirmed
    # 30 ms of stall: back off at once.
    back = engine.decide(history(mem_host(1, 1 * G, 30_000)))
    assert summary(back) == [(W, "memory.high", int(G * 1.0225) & ~4095)]
    apply(engine, back, Outcome.APPLIED)
    assert engine.originals() == {(W, "memory.high"): MAX}


def test_skipped_makes_the_controller_reread(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    first = engine.decide(history(mem_host(0, MAX)))
    apply(engine, first, Outcome.SKIPPED)  # someone wrote memory.high meanwhile
    assert engine.state("mem", "memory_pressure", W) is None
    again = engine.decide(history(mem_host(1, 3 * G)))
    assert [(a.old, a.new) for a in again] == [(3 * G, 1 * G)]  # re-read, reset to current


def test_external_change_after_applied_resets(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    apply(engine, engine.decide(history(mem_host(0, MAX))), Outcome.APPLIED)
    reset = engine.decide(history(mem_host(1, 2 * G)))
    assert len(reset) == 1 and "externally" in reset[0].reason


def test_dry_run_decides_as_the_live_run(tmp_path: Path) -> None:
    """Same workload, dry-run vs enforce: the same decisions, though the dry run's writes
    never reach the (simulated) kernel."""
    live = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    dry = Engine(policy(tmp_path, MEM.replace("MODE", "dry-run")))
    live_high: object = MAX
    decisions: dict[str, list[object]] = {"live": [], "dry": []}
    for t in range(0, 30):
        some = 40_000 * t if t < 3 else 120_000  # stall early, then quiet
        acts = live.decide(history(mem_host(t, live_high, some)))
        apply(live, acts, Outcome.APPLIED)
        for a in acts:
            live_high = a.new
        decisions["live"] += [(t, a.new) for a in acts]
        acts = dry.decide(history(mem_host(t, MAX, some)))
        apply(dry, acts, Outcome.DRY_RUN)
        assert all(a.mode is Mode.DRY_RUN for a in acts)
        decisions["dry"] += [(t, a.new) for a in acts]
    assert decisions["live"] == decisions["dry"] and len(decisions["live"]) > 3


CPU = """
[[rule]]
name = "cpu"
select = { cgroup = "corral/*" }
[rule.cpu_quota]
min = 0.2
max = 2
raise_after = 1
cooldown = "10s"
"""


def cpu_host(t: float, quota: int) -> HostSample:
    stat = (round(t * 1e6), round(t * 10), round(t * 5))  # busy, half the periods throttled
    return host(t, cg(W, cpu=stat, cpu_max=CpuMax(quota)))


def test_cooldown_and_drift_check_start_at_applied(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, CPU))
    h = history(cpu_host(0, 100_000), cpu_host(1, 100_000))
    first = engine.decide(h)
    assert summary(first) == [(W, "cpu.max", CpuMax(150_000))]
    apply(engine, first, Outcome.APPLIED)
    h = history(cpu_host(1, 150_000), cpu_host(5, 150_000))
    assert engine.decide(h) == []  # cooldown (10 s)
    h = history(cpu_host(5, 150_000), cpu_host(11, 150_000))
    assert summary(engine.decide(h)) == [(W, "cpu.max", CpuMax(200_000))]
    # An external change to cpu.max: the controller takes it, restarts its cooldown.
    engine2 = Engine(policy(tmp_path, CPU))
    apply(
        engine2,
        engine2.decide(history(cpu_host(0, 100_000), cpu_host(1, 100_000))),
        Outcome.APPLIED,
    )
    h = history(cpu_host(11, 120_000), cpu_host(12, 120_000))
    assert engine2.decide(h) == []
    assert engine2.state("cpu", "cpu_quota", W).last_change == 12


def test_state_of_a_vanished_cgroup_is_forgotten(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    engine.decide(history(mem_host(0, MAX)))
    assert engine.state("mem", "memory_pressure", W) is not None
    engine.decide(history(host(1, cg("corral"))))
    assert engine.state("mem", "memory_pressure", W) is None


GROUP = """
[enforcer]
managed_root = "corral"

[[rule]]
name = "guard"
select = { kind = "container" }
[rule.oom_guard]
full_avg10 = 0.3
duration = "2s"
[rule.pids_guard]
headroom = 10
min = 10
max = 100

[[rule]]
name = "io"
select = { name = "batch" }
[rule.io_pressure]
protect = ["corral/db"]
devices = ["8:0"]
wbps = "1M"
"""


def test_group_controllers_triggers_and_notes(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, GROUP))

    def snap(t: float, refused: int) -> HostSample:
        root = cg("corral", full_avg10=60.0, stat={"pgscan": int(t * 100)}, io_some=0)
        return host(
            t,
            root,
            cg("corral/db", current=1 * G, pids=5, pids_max=15, refused=refused, io_some=0),
            cg("corral/batch", current=2 * G, pids=5, pids_max=15, io_some=0),
        )

    hosts = [snap(t, 0 if t < 2 else 7) for t in range(4)]
    kinds = []
    for i in range(1, len(hosts) + 1):
        acts = engine.decide(history(*hosts[:i]))
        kinds.append(summary(acts))
    assert kinds[2] == [
        ("corral/batch", "cgroup.freeze", True),
        ("corral/batch", "cgroup.kill", True),
    ]  # the io rule does not take oom_guard: "guard" governs batch's oom_guard too
    assert engine.notes() == []
    engine.decide(history(hosts[-1], snap(5, 20)))
    assert engine.notes() == [
        "guard/pids_guard: corral/db: fork storm: 13 forks refused at pids.max 15, holding it"
    ]
    triggers = engine.triggers(history(hosts[-1])[-1])
    assert triggers == [("corral/db", "io", "some 200000 1000000")]


def test_triggers_for_memory_pressure(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    assert engine.triggers(history(mem_host(0, MAX))[-1]) == [(W, "memory", "some 10000 1000000")]


def test_default_policy_on_a_container(tmp_path: Path) -> None:
    default = Path(__file__).resolve().parents[2] / "enforce" / "policies" / "default.toml"
    engine = Engine(load_policy(default))
    sample = cg(
        W, current=512 * M, high=MAX, cpu=(0, 0, 0), cpu_max=CpuMax(MAX), pids=3, pids_max=MAX
    )
    acts = engine.decide(history(host(0, cg("corral"), sample)))
    assert summary(acts) == [
        (W, "memory.high", 512 * M),
        (W, "cpu.max", CpuMax(400_000)),
        (W, "pids.max", 259),
    ]


def test_successor_keeps_state_of_unchanged_rules_and_all_originals(tmp_path: Path) -> None:
    engine = Engine(policy(tmp_path, MEM.replace("MODE", "enforce")))
    first = engine.decide(history(mem_host(0, MAX)))
    apply(engine, first, Outcome.APPLIED)
    state = engine.state("mem", "memory_pressure", W)
    same = engine.successor(policy(tmp_path, MEM.replace("MODE", "enforce")))
    assert same.state("mem", "memory_pressure", W) == state
    assert same.originals() == {(W, "memory.high"): MAX}
    changed = engine.successor(policy(tmp_path, MEM.replace("MODE", "dry-run")))
    assert changed.state("mem", "memory_pressure", W) is None  # a changed rule starts afresh
    assert changed.originals() == {(W, "memory.high"): MAX}  # on_exit still restores it
