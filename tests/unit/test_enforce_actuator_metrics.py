"""The enforcer's metric families: counts by outcome and refusal kind, current targets,
rendered in both exposition formats, accepted by promtool, and served by the Exporter after
the snapshot's families."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from test_exporter_support import fixture_view, promtool_check

from enforce.actions import AuditEntry, Mode, Outcome
from enforce.metrics import EnforcerMetrics, reason_kind
from monitor.exporter import Exporter, Format

MiB = 1 << 20


def entry(outcome: Outcome, file: str = "memory.high", new: str = "", **kw: str) -> AuditEntry:
    values: dict[str, object] = {
        "time": 1.0,
        "rule": "web",
        "controller": "memory_pressure",
        "cgroup": "corral/web",
        "file": file,
        "old": "max",
        "new": new or str(256 * MiB),
        "mode": Mode.ENFORCE,
        "outcome": outcome,
        "reason": "",
    }
    values.update(kw)
    return AuditEntry(**values)  # type: ignore[arg-type]


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def filled() -> EnforcerMetrics:
    m = EnforcerMetrics()
    m.record(
        [
            entry(Outcome.APPLIED),
            entry(Outcome.APPLIED, new=str(300 * MiB)),
            entry(Outcome.REFUSED, reason="rate limit: more than 20 writes per second"),
            entry(Outcome.REFUSED, reason="corral/web is outside the managed root 'x'"),
            entry(Outcome.DRY_RUN, "cpu.max", "150000 100000", controller="cpu_quota"),
            entry(Outcome.APPLIED, "pids.max", "max", controller="pids_guard"),
            entry(Outcome.SKIPPED, "pids.max", "64", controller="pids_guard"),
            entry(Outcome.APPLIED, "memory.high", str(MiB), cgroup='odd"name'),
        ]
    )
    m.decided(1764375600.5)
    return m


def test_counts_targets_and_timestamp() -> None:
    got = samples(filled().render())
    web = (("action", "applied"), ("controller", "memory_pressure"), ("rule", "web"))
    assert got[("corral_enforcer_actions_total", web)] == 3.0
    kinds = {dict(k[1])["reason_kind"]: v for k, v in got.items() if "refusals" in k[0]}
    assert kinds == {"rate_limit": 1.0, "managed_root": 1.0}
    target = "corral_enforcer_target_memory_high_bytes"
    assert got[(target, (("cgroup", "corral/web"),))] == 300 * MiB  # the last one set
    assert got[(target, (("cgroup", 'odd"name'),))] == MiB
    assert got[("corral_enforcer_target_cpu_limit_cores", (("cgroup", "corral/web"),))] == 1.5
    # pids.max set to max: no series (as the catalogue's limits); a skipped one sets nothing.
    assert not [k for k in got if k[0] == "corral_enforcer_target_pids_limit"]
    assert got[("corral_enforcer_last_decision_timestamp_seconds", ())] == 1764375600.5


def test_targets_of_vanished_cgroups_are_dropped() -> None:
    m = filled()
    m.retain({"corral/web"})
    assert b'odd\\"name' not in m.render()
    assert b"corral/web" in m.render()


def test_empty_metrics_render_nothing() -> None:
    assert EnforcerMetrics().render() == b""


def test_text_passes_promtool_and_openmetrics_parses() -> None:
    promtool_check(filled().render(openmetrics=False))  # promtool reads the text format only
    om = filled().render(openmetrics=True) + b"# EOF\n"
    families = openmetrics_families(om.decode())  # type: ignore[no-untyped-call]
    parsed = {f.name: f for f in families}
    assert parsed["corral_enforcer_actions"].type == "counter"
    assert parsed["corral_enforcer_target_memory_high_bytes"].unit == "bytes"
    assert b"# UNIT corral_enforcer_target_memory_high_bytes bytes" in om
    assert b"# TYPE corral_enforcer_actions counter" in om


def test_reason_kinds_are_a_fixed_set() -> None:
    assert reason_kind("the root cgroup is never written") == "root"
    assert reason_kind("x is (in) init.scope, where the init system lives") == "init_scope"
    assert reason_kind("corral holds the enforcer itself (corral/agent)") == "own_cgroup"
    assert reason_kind("memory.max 5 is below memory.current 9 + margin 1") == "memory_margin"
    assert reason_kind("something new") == "other"


def test_exporter_serves_the_families_after_the_snapshot(tmp_path: Path) -> None:
    view = fixture_view(tmp_path)
    exporter = Exporter(1.0, sysfs=view.sysfs)
    metrics = filled()
    exporter.add_families(metrics.render)
    rendered = exporter.publish(view.snapshot)
    for fmt in Format:
        body = rendered.body(fmt)
        assert body.count(b"corral_enforcer_actions_total{") == 5
        assert body.index(b"corral_cgroup_info") < body.index(b"corral_enforcer_")
        if fmt is Format.OPENMETRICS:
            last = b"corral_enforcer_last_decision_timestamp_seconds 1.7643756005e+09\n"
            assert body.endswith(last + b"# EOF\n")
            families = list(openmetrics_families(body.decode()))  # type: ignore[no-untyped-call]
            assert len(families) > 6
        else:
            promtool_check(body)
    assert rendered.body(Format.TEXT, gzipped=True)[:2] == b"\x1f\x8b"
    # Taken at publish time: a later decision shows with the next snapshot only.
    metrics.decided(1764375700.0)
    assert b"1.7643757e+09" not in rendered.body(Format.TEXT)
    assert b"1.7643757e+09" in exporter.publish(view.snapshot).body(Format.TEXT)
