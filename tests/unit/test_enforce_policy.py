"""Policy files: validation with the exact messages (FILE:LINE: field: value: allowed),
directory merges, and which rule governs which cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_enforce_controllers_support import cg, history, host, names_for

from enforce.actions import Mode
from enforce.policy import PolicyError, load_policies, load_policy
from enforce.policy.schema import Selector
from enforce.policy.select import assign, may_overlap
from runtime.cgroupfs.cpu import CpuMax

DEFAULT = Path(__file__).resolve().parents[2] / "enforce" / "policies" / "default.toml"


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    return [e.replace(str(path), "F") for e in info.value.errors]


def test_default_policy_loads() -> None:
    policy = load_policy(DEFAULT)
    assert [r.name for r in policy.rules] == ["containers"]
    rule = policy.rules[0]
    assert rule.controllers() == ("memory_pressure", "cpu_quota", "pids_guard", "oom_guard")
    assert rule.select.kind == "container" and rule.mode is Mode.ENFORCE
    assert policy.settings.managed_root == "corral" and policy.source == str(DEFAULT)


def test_values_parse_human_units(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[enforcer]
tick_seconds = "500ms"
memory_max_margin_bytes = "128M"

[[rule]]
name = "web"
mode = "dry-run"
select = { name = "web*", labels = { tier = "front" } }
limits = { memory_max = "1.5G", cpu_max = "0.5", pids_max = "max", io_max = ["8:0 wbps=1M"] }
[rule.memory_pressure]
interval = "2m"
pressure = "25ms"
""",
    )
    policy = load_policy(path)
    assert policy.settings.tick_seconds == 0.5
    assert policy.settings.memory_max_margin_bytes == 128 << 20
    rule = policy.rules[0]
    assert rule.mode is Mode.DRY_RUN and rule.select.labels == {"tier": "front"}
    assert rule.limits is not None and rule.limits.memory_max == 3 << 29
    assert rule.limits.cpu_max == CpuMax(50_000, 100_000)
    assert rule.memory_pressure is not None
    assert (rule.memory_pressure.interval, rule.memory_pressure.pressure) == (120.0, 0.025)


BAD = """\
[enforcer]
tick_seconds = "soon"
colour = "red"

[[rule]]
name = "a"
select = { kind = "container" }
[rule.memory_pressure]
interval = "6s"

[[rule]]
name = "b"
mode = "yolo"
select.kind = "vm"
limits.memory_max = "lots"

[[rule]]
name = "c"
[rule.memory_pressure]
max_probe = 2.5
bogus = 1
"""


def test_bad_values_name_file_line_field_value_and_allowed(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, BAD)) == [
        "F:2: enforcer.tick_seconds: bad value 'soon': allowed: a duration like 6s, 10ms, "
        "2m, 1h or a number of seconds",
        "F:3: enforcer.colour: unknown key: allowed keys managed_root, tick_seconds, "
        "max_writes_per_second, memory_max_margin_bytes, on_exit, audit_log",
        "F:13: rule[1].mode: bad value 'yolo': allowed: one of 'enforce', 'dry-run' or 'recommend'",
        "F:14: rule[1].select.kind: bad value 'vm': allowed: one of 'container', 'service', "
        "'scope', 'slice', 'docker', 'podman', 'kubernetes' or 'cgroup'",
        "F:15: rule[1].limits.memory_max: bad value 'lots': allowed: a size like 256M, 1.5G, "
        "512k, 1GiB or 1048576 (bytes), or 'max'",
        "F:20: rule[2].memory_pressure.max_probe: bad value 2.5: allowed: at most 1.0",
        "F:21: rule[2].memory_pressure.bogus: unknown key: allowed keys interval, pressure, "
        "max_probe, max_backoff, coeff_probe, coeff_backoff, min, max, trigger_window, "
        "memory_max_headroom, min_step, interval_growth, max_interval, reset_change, "
        "descent_after, descent_margin, max_descent",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[rule]]\nname = "a"\n[rule.cpu_quota]\nmin = 2\nmax = 1\n',
            "F:3: rule[0].cpu_quota: min 2.0 is above max 1.0: allowed min <= max",
        ),
        (
            '[[rule]]\nname = "a"\nlimits = { memory_high = "2G", memory_max = "1G" }\n',
            "F:3: rule[0].limits: memory_high 2147483648 is above memory_max 1073741824: "
            "allowed memory_high <= memory_max",
        ),
        (
            '[[rule]]\nname = "a"\n',
            "F:1: rule[0]: enables no controller: allowed limits, memory_pressure, cpu_quota, "
            "pids_guard, io_pressure, oom_guard",
        ),
        (
            '[[rule]]\nname = "a"\n[rule.pids_guard]\nheadroom = "lots"\n',
            "F:4: rule[0].pids_guard.headroom: bad value 'lots': allowed: input should be a "
            "valid integer, unable to parse string as an integer",
        ),
        (
            "[[rule]]\nmemory_pressure = {}\n",
            "F:1: rule[0].name: missing: this key is required",
        ),
        (
            '[[rule]]\nname = "a"\nmemory_pressure = {\n',
            "F:3: not valid TOML: Invalid initial character for a key part",
        ),
    ],
)
def test_bad_files(tmp_path: Path, text: str, expected: str) -> None:
    assert errors_of(write(tmp_path, text)) == [expected]


CONFLICT = """\
[[rule]]
name = "all"
select = { cgroup = "corral/*" }
limits = { memory_max = "1G" }

[[rule]]
name = "db"
select = { kind = "service" }
limits = { cpu_weight = 50 }

[[rule]]
name = "web"
select = { name = "web" }
[rule.limits]
memory_max = "2G"
"""


def test_overlapping_selectors_with_conflicting_limits(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, CONFLICT)) == [
        "F:15: rule 'web' limits.memory_max = 2G conflicts with rule 'all' limits.memory_max "
        "= 1G: their selectors may match the same cgroup; allowed: disjoint selectors (kind, "
        "labels, name or cgroup) or the same value"
    ]


def test_disjoint_selectors_may_differ(tmp_path: Path) -> None:
    text = CONFLICT.replace('name = "web" }', 'cgroup = "system.slice/*" }')
    assert [r.name for r in load_policy(write(tmp_path, text)).rules] == ["all", "db", "web"]


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ({}, {"kind": "container"}, True),
        ({"kind": "container"}, {"kind": "service"}, False),
        ({"labels": {"t": "a"}}, {"labels": {"t": "b"}}, False),
        ({"labels": {"t": "a"}}, {"labels": {"u": "b"}}, True),
        ({"name": "web"}, {"name": "db"}, False),
        ({"name": "web*"}, {"name": "web1"}, True),
        ({"name": "web*"}, {"name": "db*"}, False),
        ({"cgroup": "corral/*"}, {"cgroup": "system.slice/x"}, False),
        ({"cgroup": "corral/*"}, {"name": "x"}, True),
    ],
)
def test_may_overlap(a: dict[str, object], b: dict[str, object], overlap: bool) -> None:
    sa, sb = Selector.model_validate(a), Selector.model_validate(b)
    assert may_overlap(sa, sb) is overlap and may_overlap(sb, sa) is overlap


def test_directory_merges_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, '[[rule]]\nname = "b"\npids_guard = {}\n', "20-b.toml")
    write(
        tmp_path,
        '[enforcer]\nmanaged_root = "x"\n[[rule]]\nname = "a"\ncpu_quota = {}\n',
        "10-a.toml",
    )
    (tmp_path / "notes.txt").write_text("not a policy")
    policy = load_policies(tmp_path)
    assert [r.name for r in policy.rules] == ["a", "b"]
    assert policy.settings.managed_root == "x"
    assert policy.source == f"{tmp_path}/10-a.toml,{tmp_path}/20-b.toml"


def test_directory_rule_names_unique(tmp_path: Path) -> None:
    write(tmp_path, '[[rule]]\nname = "a"\npids_guard = {}\n', "1.toml")
    write(tmp_path, '\n[[rule]]\nname = "a"\ncpu_quota = {}\n', "2.toml")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}/2.toml:2: rule.name: 'a' is also a rule in {tmp_path}/1.toml: "
        "allowed names unique across the directory"
    )


def test_directory_conflicts_across_files(tmp_path: Path) -> None:
    write(tmp_path, '[[rule]]\nname = "a"\nlimits = { pids_max = 10 }\n', "1.toml")
    write(tmp_path, '[[rule]]\nname = "b"\nlimits = { pids_max = 20 }\n', "2.toml")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}/2.toml:3: rule 'b' limits.pids_max = 20")


def test_empty_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no \*\.toml policy files"):
        load_policies(tmp_path)
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(tmp_path / "absent.toml")


# -- selection ----------------------------------------------------------------------------

SELECT = """\
[[rule]]
name = "front"
select = { name = "web*", labels = { tier = "front" } }
limits = { cpu_weight = 200 }
memory_pressure = {}

[[rule]]
name = "containers"
select = { kind = "container" }
memory_pressure = {}
pids_guard = {}

[[rule]]
name = "by-path"
select = { cgroup = "corral/batch*" }
cpu_quota = {}
"""


def test_first_matching_rule_wins_per_controller(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, SELECT))
    paths = ["", "corral", "corral/web1", "corral/web2", "corral/batch1", "system.slice/x"]
    names = names_for(paths, web1={"tier": "front"}, web2={"tier": "back"})
    snap = history(host(0, *(cg(p) for p in paths)), names=names)[-1]
    got = sorted((a.cgroup, a.controller, a.rule.name) for a in assign(policy, snap))
    assert got == [
        ("corral/batch1", "cpu_quota", "by-path"),
        ("corral/batch1", "memory_pressure", "containers"),
        ("corral/batch1", "pids_guard", "containers"),
        ("corral/web1", "limits", "front"),
        ("corral/web1", "memory_pressure", "front"),
        ("corral/web1", "pids_guard", "containers"),
        ("corral/web2", "memory_pressure", "containers"),
        ("corral/web2", "pids_guard", "containers"),
    ]  # "corral" is a plain cgroup, system.slice is outside the managed root


def test_example_policies_load() -> None:
    examples = DEFAULT.parent / "examples"
    for path in sorted(examples.glob("*.toml")):
        policy = load_policy(path)
        assert policy.rules, path
    web = load_policy(examples / "web-and-batch.toml")
    assert [(r.name, r.mode.value, r.controllers()) for r in web.rules] == [
        ("web", "enforce", ("limits", "memory_pressure")),
        ("batch", "dry-run", ("cpu_quota", "io_pressure")),
        ("everyone", "enforce", ("pids_guard",)),
    ]


def test_top_level_keys_are_only_enforcer_and_rule(tmp_path: Path) -> None:
    path = write(tmp_path, '[[rule]]\nname = "a"\npids_guard = {}\n\n[rules]\nx = 1\n')
    assert errors_of(path) == ["F:5: rules: unknown key: allowed keys enforcer, rule"]
    path = write(tmp_path, 'source = "elsewhere"\n')
    assert errors_of(path) == ["F:1: source: unknown key: allowed keys enforcer, rule"]
