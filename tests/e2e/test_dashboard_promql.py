"""Every PromQL expression of dashboards/grafana/corral.json and dashboards/prometheus/rules.yml
against a real Prometheus (Debian's package) that loads the rules and scrapes two corral
exporters on loopback, plus `promtool check rules` and `promtool test rules`.

The two targets: `corral serve --no-enforce` on the host (job "corral"), whose hybrid cgroup2
has no controllers, so it serves only a few families; and corral's own collector, exporter
and HTTP server in this process reading a copy of the cgroup tree captured from the real
kernel (tests/fixtures/cgroupfs, job "corral-capture"), which has every controller's files,
with one io.stat garbled so that the poll-error counter exists too, and the enforcer's
families (enforce.metrics.EnforcerMetrics) counting one round of audit entries per poll.
Between them every family of monitor/exporter/metrics.py and enforce/metrics.py is scraped,
so the rules evaluate on real series and the dashboard's queries return data.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_prometheus_e2e import CORRAL, fetch, free_port, running, value_of, wait_for

import dashboards.expressions as dashboards
from enforce.actions import AuditEntry, Mode, Outcome
from enforce.metrics import FAMILIES, EnforcerMetrics
from monitor.collector import Collector, CollectorConfig
from monitor.exporter import Exporter
from monitor.exporter.server import MetricsServer
from runtime.cgroupfs import CgroupFS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cgroupfs" / "6.1.0-56-amd64"
# The enforcer's families, served only while it runs.
ENFORCER_METRICS = {m.name for m in FAMILIES}
PROMETHEUS_OWN = {"up"}  # written by Prometheus for every target
DEADLINE_SECONDS = 90
WINDOW = "10s"  # $__rate_interval and $__range: ten scrapes at 1s
# Grafana escapes these in a multi-value variable's regex (prometheusRegularEscape).
REGEX_SPECIAL = set("$^*{}[]'+?.()|")
# A cgroup named as systemd escapes a "-" inside a unit name (a copy of capture/forky).
SYSTEMD_NAME = "capture/dev-disk-by\\x2dlabel-data.mount"


@dataclass(frozen=True)
class Stack:
    prometheus: str
    targets: dict[str, str]  # job -> host:port
    served_names: set[str]  # metric names the two exporters serve


def decisions(now: float) -> list[AuditEntry]:
    """One round of an enforcer over the capture: each outcome the dashboard shows."""
    worker, web = "capture/batch/worker-1", "capture/web"
    return [
        AuditEntry(now, "batch-memory", "memory", worker, "memory.high", "33554432", "41943040",
                   Mode.ENFORCE, Outcome.APPLIED, "working set near memory.high"),
        AuditEntry(now, "batch-memory", "memory", worker, "memory.high", "41943040", "8388608",
                   Mode.ENFORCE, Outcome.REFUSED, "8M is below memory.current"),
        AuditEntry(now, "web-cpu", "cpu", web, "cpu.max", "20000 100000", "30000 100000",
                   Mode.DRY_RUN, Outcome.DRY_RUN, "throttled"),
        AuditEntry(now, "forky-pids", "pids", "capture/forky", "pids.max", "8", "16",
                   Mode.ENFORCE, Outcome.APPLIED, "forks refused"),
    ]  # fmt: skip


@contextlib.contextmanager
def capture_exporter(tmp: Path) -> Iterator[MetricsServer]:
    """corral's collector polling a copy of the captured tree every 0.5s, its exporter with
    the enforcer's families, served by MetricsServer on a free loopback port."""
    root = tmp / "captured"
    shutil.copytree(FIXTURE, root)
    (root / "capture" / "forky" / "io.stat").write_text("not io.stat\n")
    shutil.copytree(root / "capture" / "forky", root / SYSTEMD_NAME)
    collector = Collector(CgroupFS(root, verify=False), CollectorConfig(watch=False))
    exporter, enforcer = Exporter(0.5), EnforcerMetrics()
    exporter.add_families(enforcer.render)
    stop = threading.Event()

    def once() -> None:
        snapshot = collector.poll()
        enforcer.record(decisions(snapshot.sample.wall_time))
        enforcer.decided(snapshot.sample.wall_time)
        exporter.publish(snapshot)

    def poll() -> None:
        while not stop.wait(0.5):
            once()

    once()

    poller = threading.Thread(target=poll, name="capture-poller", daemon=True)
    server = MetricsServer(exporter, "127.0.0.1", 0)
    server.start()
    poller.start()
    try:
        yield server
    finally:
        stop.set()
        poller.join(timeout=10)
        server.stop()


def prometheus_config(tmp: Path, targets: dict[str, str]) -> Path:
    config = tmp / "prometheus.yml"
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        for job, target in targets.items()
    )
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {dashboards.PROMETHEUS_RULES}\n"
        f"scrape_configs:\n{jobs}"
    )
    return config


def exposed_names(body: bytes) -> set[str]:
    """The metric names of the samples in a text exposition."""
    lines = body.decode().splitlines()
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in lines if line and line[0] != "#"}


def api(prometheus: str, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    """One Prometheus HTTP API call; its JSON answer, errors (400, 422) included."""
    url = f"{prometheus}{path}?" + urllib.parse.urlencode(params or {})
    try:
        data = fetch(url)
    except urllib.error.HTTPError as err:
        data = err.read()
    answer: dict[str, Any] = json.loads(data)
    return answer


def rules_evaluated(prometheus: str, deadline: float) -> list[dict[str, Any]]:
    """Every rule, once each has been evaluated at least twice after scrapes began."""
    while time.monotonic() < deadline:
        groups = api(prometheus, "/api/v1/rules")["data"]["groups"]
        rules: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
        if rules and all(r["health"] != "unknown" for r in rules):
            time.sleep(2.5)  # two more evaluations at the 1s interval
            groups = api(prometheus, "/api/v1/rules")["data"]["groups"]
            return [r for g in groups for r in g["rules"]]
        time.sleep(0.5)
    raise AssertionError("Prometheus never evaluated every rule")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("promql")
    deadline = time.monotonic() + DEADLINE_SECONDS
    corral_port, prom_port = free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prom_port}"
    corral_argv = [CORRAL, "serve", "--no-enforce", "--listen", f"127.0.0.1:{corral_port}"]
    with capture_exporter(tmp) as capture:
        targets = {
            "corral": f"127.0.0.1:{corral_port}",
            "corral-capture": f"127.0.0.1:{capture.port}",
        }
        prom_argv = [
            "prometheus",
            f"--config.file={prometheus_config(tmp, targets)}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            f"--storage.tsdb.path={tmp / 'data'}",
        ]
        with (
            running(corral_argv, tmp / "corral.log") as corral,
            running(prom_argv, tmp / "prometheus.log") as prom,
        ):
            wait_for(f"http://127.0.0.1:{corral_port}/healthz", corral, deadline)
            wait_for(f"{prometheus}/-/ready", prom, deadline)
            for job in targets:  # ten scrapes of each: every window below is full
                selector = f'corral_polls_total{{job="{job}"}}'
                while value_of(prometheus, f"count_over_time({selector}[{WINDOW}])", deadline) < 10:
                    time.sleep(0.5)
            served = exposed_names(fetch(f"http://{targets['corral']}/metrics"))
            served |= exposed_names(fetch(f"{capture.url}/metrics"))
            yield Stack(prometheus, targets, served)


def multi_value(values: list[str]) -> str:
    """A multi-value variable's value with "All" selected, as Grafana writes it into a
    regex matcher: each value regex-escaped, inside a double-quoted PromQL string (where a
    regex backslash is written twice). systemd's names hold backslashes ("\\x2d")."""

    def escape(c: str) -> str:
        if c == "\\":
            return "\\" * 4
        if c == '"':
            return '\\"'
        return f"\\\\{c}" if c in REGEX_SPECIAL else c

    return "(" + "|".join("".join(map(escape, v)) for v in values) + ")"


def label_values(stack: Stack, promql: str, label: str) -> list[str]:
    answer = api(stack.prometheus, "/api/v1/query", {"query": promql})
    assert answer["status"] == "success", (promql, answer)
    return sorted(r["metric"][label] for r in answer["data"]["result"])


def plain_variables(stack: Stack, job: str) -> dict[str, str]:
    values = {"job": job, "instance": stack.targets[job], "kind": ".*"}
    return values | {"__rate_interval": WINDOW, "__range": WINDOW, "__interval": "1s"}


def cgroups(stack: Stack, job: str) -> list[str]:
    """The values of the cgroup variable, from its own query, with every kind selected."""
    (var,) = [v for v in dashboards.load_dashboard()["templating"]["list"] if v["name"] == "cgroup"]
    query = dashboards.variable_promql(var["query"]["query"])
    assert query is not None
    found = label_values(stack, dashboards.substitute(query, plain_variables(stack, job)), "cgroup")
    assert found, f"no cgroups for {job}"
    return found


def variables(stack: Stack, job: str) -> dict[str, str]:
    """Every variable of the dashboard for ``job``'s target, as Grafana resolves it with
    "All" selected."""
    return plain_variables(stack, job) | {"cgroup": multi_value(cgroups(stack, job))}


def expressions(stack: Stack) -> list[dashboards.Expression]:
    """The dashboard's expressions against each target, and every rule's."""
    board = dashboards.load_dashboard()
    out = [
        expr._replace(where=f"{job}: {expr.where}")
        for job in stack.targets
        for expr in dashboards.grafana_expressions(board, variables(stack, job))
    ]
    return out + dashboards.rule_expressions(dashboards.load_rules())


def run(stack: Stack, expr: dashboards.Expression) -> dict[str, Any]:
    """The query as Grafana sends it: instant, or a range over the last minute at 1s."""
    if expr.instant:
        return api(stack.prometheus, "/api/v1/query", {"query": expr.promql})
    end = time.time()
    params = {"query": expr.promql, "start": str(end - 60), "end": str(end), "step": "1"}
    return api(stack.prometheus, "/api/v1/query_range", params)


def test_promtool_checks_and_tests_the_rules() -> None:
    rules = dashboards.PROMETHEUS_RULES
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    count = sum(len(g["rules"]) for g in dashboards.load_rules()["groups"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {count} rules found" in checked.stdout
    tests = sorted(dashboards.PROMETHEUS_RULE_TESTS.glob("*.yml"))
    assert tests
    tested = subprocess.run(
        ["promtool", "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(tests), tested.stdout


def test_every_expression_parses_and_evaluates(stack: Stack) -> None:
    failed = []
    for expr in expressions(stack):
        answer = run(stack, expr)
        if answer["status"] != "success":
            failed.append(f"{expr.where}: {expr.promql}\n  {answer.get('error')}")
    assert not failed, "\n".join(failed)


def test_every_expression_names_only_metrics_corral_exports(stack: Stack) -> None:
    rules = dashboards.load_rules()
    known = stack.served_names | dashboards.record_names(rules) | ENFORCER_METRICS | PROMETHEUS_OWN
    unknown = []
    for expr in expressions(stack):
        names = dashboards.metric_names(expr.promql)
        assert names, f"{expr.where} selects no metric: {expr.promql}"
        if names - known:
            unknown.append(f"{expr.where}: {sorted(names - known)} in {expr.promql}")
    assert not unknown, "\n".join(unknown)
    stored = set(api(stack.prometheus, "/api/v1/label/__name__/values")["data"])
    assert stack.served_names <= stored, sorted(stack.served_names - stored)


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    rules = rules_evaluated(stack.prometheus, deadline)
    broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not broken, "\n".join(broken)
    stored = set(api(stack.prometheus, "/api/v1/label/__name__/values")["data"])
    # Every recording rule has the capture's series to work on, but the one that keeps only
    # cgroups whose counters advanced ("> 0").
    records = {
        r["record"]: r["expr"]
        for g in dashboards.load_rules()["groups"]
        for r in g["rules"]
        if "record" in r
    }
    missing = {name for name, expr in records.items() if "> 0" not in expr} - stored
    assert not missing, sorted(missing)


def test_dashboard_panels_show_every_captured_cgroup(stack: Stack) -> None:
    """Over the capture (static kernel counters, so their rates are 0), each target returns
    series unless it filters with "> 0", and every cgroup the variable lists shows up: the
    escaped regex of "All" matches odd names, systemd's backslashes included."""
    empty, shown = [], set()
    for expr in expressions(stack):
        if not expr.where.startswith("corral-capture: panel") or "> 0" in expr.promql:
            continue
        answer = run(stack, expr)
        if answer["status"] != "success" or not answer["data"]["result"]:
            empty.append(f"{expr.where}: {expr.promql} {answer.get('error', '')}")
            continue
        shown |= {
            r["metric"]["cgroup"] for r in answer["data"]["result"] if "cgroup" in r["metric"]
        }
    assert not empty, "\n".join(empty)
    listed = cgroups(stack, "corral-capture")
    assert {"capture/odd name #1 (a+b)", SYSTEMD_NAME} <= set(listed)
    assert shown == set(listed)
