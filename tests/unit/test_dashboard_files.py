"""The Grafana dashboard and the Prometheus rules, read as files: structure, variables,
units, metric names against monitor/exporter/metrics.py's catalogue and enforce/metrics.py,
rule names and the promtool test files' coverage. tests/e2e/test_dashboard_promql.py runs
every expression on a real Prometheus; these checks need nothing but the files.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
import yaml

import dashboards.expressions as dashboards
from dashboards.expressions import Selector, metric_names, selectors, substitute, variable_promql
from enforce.metrics import FAMILIES
from monitor.exporter.metrics import CATALOGUE, CGROUP_METRICS

DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) used here.
UNITS = {"short", "none", "percentunit", "bytes", "binBps", "iops", "ops", "cps", "s"}
ENFORCER = {m.name for m in FAMILIES}
PER_CGROUP = {m.name for m in CGROUP_METRICS} | {
    m.name for m in FAMILIES if m.labels == ("cgroup",)
}
RECORD = re.compile(r"^(?P<level>[a-z_]+):(?P<metric>[a-z0-9_]+):(?P<ops>[a-z0-9_]+)$")

BOARD = dashboards.load_dashboard()
RULES = dashboards.load_rules()
VARIABLES = {v["name"]: v for v in BOARD["templating"]["list"]}
CONTENT = [p for p in dashboards.panels(BOARD) if p["type"] != "row"]
RULE_LIST = [r for g in RULES["groups"] for r in g["rules"]]
ALERTS = [r for r in RULE_LIST if "alert" in r]
RECORDS = [r for r in RULE_LIST if "record" in r]


def values() -> dict[str, str]:
    return {name: f"<{name}>" for name in VARIABLES} | BUILTINS


def rule_tests() -> list[dict[str, Any]]:
    files = sorted(dashboards.PROMETHEUS_RULE_TESTS.glob("*.yml"))
    return [t for f in files for t in yaml.safe_load(f.read_text())["tests"]]


def test_dashboard_is_recent_grafana_json_with_a_prometheus_datasource_variable() -> None:
    assert BOARD["schemaVersion"] >= 39 and BOARD["uid"] == "corral" and BOARD["title"]
    datasource = VARIABLES["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name in ("job", "instance", "kind", "cgroup"):
        var = VARIABLES[name]
        assert var["type"] == "query" and var["datasource"] == DS, name
        assert var["query"]["query"] == var["definition"], name
        assert var["query"]["query"].startswith("label_values("), name
    # "All" cgroups must stay the kind-filtered list, so no catch-all allValue there.
    assert VARIABLES["cgroup"]["includeAll"] and "allValue" not in VARIABLES["cgroup"]


def test_the_dashboard_plots_every_figure_of_the_issue() -> None:
    """CPU vs quota, throttling, memory vs limits and its events (OOM), io, pids vs pids.max,
    pressure, the enforcer's actions and refusals, the exporter's health."""
    plotted = set().union(*(metric_names(t["expr"]) for p in CONTENT for t in p["targets"]))
    wanted = {"corral_cpu_usage_seconds_total", "corral_cpu_limit_cores", "up"}
    wanted |= {"corral_cpu_throttled_periods_total", "corral_cpu_periods_total"}
    wanted |= {f"corral_memory_{n}_bytes" for n in ("working_set", "usage", "limit_high")}
    wanted |= {"corral_memory_limit_max_bytes", "corral_memory_events_total"}
    wanted |= {f"corral_io_{n}_total" for n in ("read_bytes", "written_bytes", "reads", "writes")}
    wanted |= {"corral_pids", "corral_pids_limit", "corral_pids_forks_refused_total"}
    wanted |= {
        f"corral_pressure_{r}_{line}_seconds_total"
        for r in ("cpu", "memory", "io")
        for line in ("waiting", "stalled")
    }
    wanted |= ENFORCER
    wanted |= {"corral_last_collect_timestamp_seconds", "corral_collect_duration_seconds"}
    assert not wanted - plotted, sorted(wanted - plotted)
    oom = [p for p in CONTENT if any('event="oom_kill"' in t["expr"] for t in p["targets"])]
    assert oom and all("OOM" in p["title"] for p in oom)


def test_every_panel_and_target_queries_through_the_datasource_variable() -> None:
    for panel in CONTENT:
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"] == DS for t in panel["targets"]), panel["title"]
    for row in (p for p in BOARD["panels"] if p["type"] == "row"):
        assert "targets" not in row and not row["panels"], row["title"]


def test_panel_ids_are_unique_and_panels_tile_the_grid_without_overlap() -> None:
    everything = list(dashboards.panels(BOARD))
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in everything:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for cell in itertools.product(
            range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        ):
            assert cell not in cells, f"{panel['title']!r} overlaps {cells[cell]!r}"
            cells[cell] = panel["title"]


def test_every_panel_has_a_unit_matching_what_it_plots() -> None:
    for panel in CONTENT:
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit in UNITS, (panel["title"], unit)
        exprs = [t["expr"] for t in panel["targets"]]
        names = set().union(*(metric_names(e) for e in exprs))
        if all(n.startswith("corral_pressure_") for n in names):
            assert unit == "percentunit", panel["title"]
        elif all(n.endswith("_bytes_total") for n in names):
            assert unit == "binBps", panel["title"]
        elif all(n.endswith("_bytes") for n in names):
            assert unit == ("percentunit" if any(" / " in e for e in exprs) else "bytes")
        elif any("_timestamp_seconds" in e for e in exprs):
            assert unit == "s", panel["title"]


def test_every_variable_a_query_uses_is_defined() -> None:
    exprs = dashboards.grafana_expressions(BOARD, values())
    assert len(exprs) >= len(CONTENT)
    for expr in exprs:
        assert "$" not in expr.promql and "[[" not in expr.promql, expr


def test_every_metric_the_files_name_is_exported_or_recorded() -> None:
    known = {m.name for m in CATALOGUE} | ENFORCER | dashboards.record_names(RULES) | {"up"}
    exprs = dashboards.grafana_expressions(BOARD, values()) + dashboards.rule_expressions(RULES)
    for expr in exprs:
        names = metric_names(expr.promql)
        assert names and names <= known, (expr, sorted(names - known))


def test_every_panel_selector_filters_by_job_instance_and_cgroup() -> None:
    for panel in CONTENT:
        for target in panel["targets"]:
            for sel in selectors(target["expr"]):
                assert 'job="$job"' in sel.matchers and 'instance="$instance"' in sel.matchers
                if sel.name in PER_CGROUP:
                    assert 'cgroup=~"$cgroup"' in sel.matchers, (panel["title"], sel)


def test_record_names_follow_level_metric_operations() -> None:
    for rule in RECORDS:
        name, expr = rule["record"], rule["expr"]
        match = RECORD.match(name)
        assert match, name
        assert match["metric"].startswith("corral_") and not match["metric"].endswith("_total")
        for window in re.findall(r"\brate\([^\[]*\[(\w+)\]", expr):
            assert f"rate{window}" in match["ops"], name
        assert ("ratio" in match["ops"]) == (" / " in expr), name
        kept = set(match["level"].split("_"))
        summed = re.search(r"sum by \(([^)]*)\)", expr)
        if summed:
            assert kept <= {s.strip() for s in summed.group(1).split(",")}, name


def test_alerts_carry_severity_summary_and_description() -> None:
    assert len(ALERTS) >= 6
    for rule in ALERTS:
        assert re.fullmatch(r"Corral[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_has_promtool_cases_firing_and_not_firing() -> None:
    cases = [c for t in rule_tests() for c in t.get("alert_rule_test", [])]
    for rule in ALERTS:
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} always fires"


def test_every_recording_rule_is_tested_directly_or_through_an_alert() -> None:
    tested = {c["expr"] for t in rule_tests() for c in t.get("promql_expr_test", [])}
    used = set().union(*(metric_names(a["expr"]) for a in ALERTS))
    untested = {r["record"] for r in RECORDS} - tested - used
    assert not untested, sorted(untested)


@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        ('sum by (cgroup) (rate(a{x="}"}[5m] offset 1h))', [Selector("a", 'x="}"')]),
        ("a / on(job) group_left(name) b @ start() > bool 1e3",
         [Selector("a", ""), Selector("b", "")]),
        ('label_replace(a, "dst", "$1 b", "src", "(.*)") and Inf', [Selector("a", "")]),
        ('topk(5, a[1h:5m]) unless {__name__="b", c="d"}',
         [Selector("a", ""), Selector("b", '__name__="b", c="d"')]),
        ("x:y:rate1m - 0x1F * .5 # a comment naming c\n", [Selector("x:y:rate1m", "")]),
        ("time() - group(a)", [Selector("a", "")]),
    ],
)  # fmt: skip
def test_selectors_name_metrics_and_nothing_else(promql: str, expected: list[Selector]) -> None:
    assert selectors(promql) == expected


def test_a_selector_without_a_literal_name_is_refused() -> None:
    with pytest.raises(ValueError, match="without a literal metric name"):
        selectors('count({__name__=~"corral_.*"})')
    with pytest.raises(ValueError, match="unbalanced"):
        selectors('rate(a{b="c"[5m])')


def test_variable_queries_and_substitution() -> None:
    assert variable_promql('label_values(a{b="c"}, d)') == 'group by (d) (a{b="c"})'
    assert variable_promql("label_values(job)") is None
    assert variable_promql("query_result(max(a))") == "max(a)"
    with pytest.raises(ValueError, match="metrics"):
        variable_promql("metrics(corral_.*)")
    assert substitute('a{b=~"$b"}[${r}] [[c]]', {"b": "1", "r": "2", "c": "3"}) == 'a{b=~"1"}[2] 3'
    with pytest.raises(KeyError, match=r"\$missing"):
        substitute('a{b="$missing"}', {"b": "1"})
