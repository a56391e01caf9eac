"""The exposition of the captured fixture tree: byte for byte against the golden file, which
`promtool check metrics` accepts, and the catalogue's promises checked on it.

Regenerate the golden file deliberately (after a catalogue change) with
    CORRAL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_exporter_golden.py
and review the diff before committing it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from test_exporter_support import FIXTURE, GOLDEN, fixture_view, promtool_check

from monitor.exporter.metrics import CATALOGUE, CGROUP_METRICS, Metric
from monitor.exporter.render import Format, Rendered

GOLDEN_TEXT = GOLDEN / "metrics.prom"
ALLOWED_LABELS = {"cgroup", "device", "direction", "event", "kind", "name", "id"}
ALLOWED_LABELS |= {"version", "python"}  # corral_build_info
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(body: bytes) -> Series:
    out: Series = {}
    for family in parse_text(body.decode()):
        for s in family.samples:
            assert s.timestamp is None, f"{s.name} carries a timestamp"
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_series: Series, name: str, **labels: str) -> float | None:
    return all_series.get((name, tuple(sorted(labels.items()))))


def test_golden_file_matches_and_promtool_accepts_it(tmp_path: Path) -> None:
    body = Rendered(fixture_view(tmp_path)).body(Format.TEXT)
    if os.environ.get("CORRAL_UPDATE_GOLDEN") == "1":
        GOLDEN_TEXT.write_bytes(body)
    promtool_check(GOLDEN_TEXT.read_bytes())
    assert body == GOLDEN_TEXT.read_bytes(), (
        "the exposition differs from tests/unit/golden/metrics.prom; if the change is meant, "
        "regenerate it with CORRAL_UPDATE_GOLDEN=1 and review the diff"
    )


def test_openmetrics_rendering_parses_strictly_and_matches_the_text(tmp_path: Path) -> None:
    rendered = Rendered(fixture_view(tmp_path))
    om = rendered.body(Format.OPENMETRICS).decode()
    assert om.endswith("# EOF\n")
    om_samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse_om(om)
        for s in family.samples
    }
    assert om_samples == series(rendered.body(Format.TEXT))


def test_max_limits_have_no_series_and_set_ones_do(tmp_path: Path) -> None:
    got = series(Rendered(fixture_view(tmp_path)).body(Format.TEXT))
    # capture/web: memory.max, memory.high, memory.swap.max and pids.max are "max".
    unlimited = ["corral_memory_limit_max_bytes", "corral_memory_limit_high_bytes"]
    unlimited += ["corral_memory_swap_limit_max_bytes", "corral_pids_limit"]
    for name in unlimited:
        assert value(got, name, cgroup="capture/web") is None, name
    assert value(got, "corral_cpu_limit_cores", cgroup="capture/web") == 0.2
    assert value(got, "corral_cpu_limit_cores", cgroup="capture/batch") is None  # "max 100000"
    assert value(got, "corral_memory_limit_max_bytes", cgroup="capture/oom") == 32 << 20
    assert value(got, "corral_memory_swap_limit_max_bytes", cgroup="capture/oom") == 0
    assert value(got, "corral_memory_limit_high_bytes", cgroup="capture/batch/worker-1") == 32 << 20
    assert value(got, "corral_pids_limit", cgroup="capture/forky") == 8
    # worker-2's io.max: 254:0 rbps=8388608 wbps=4194304 riops=max wiops=400
    io = "corral_io_limit_operations_per_second"
    w2 = "capture/batch/worker-2"
    assert value(got, io, cgroup=w2, device="vda", direction="read") is None
    assert value(got, io, cgroup=w2, device="vda", direction="write") == 400
    bw = "corral_io_limit_bytes_per_second"
    assert value(got, bw, cgroup=w2, device="vda", direction="write") == 4 << 20
    assert not any(v in (float("inf"), -1.0) for (n, _), v in got.items() if "limit" in n)


def test_labels_are_the_fixed_set_and_no_series_is_per_cpu(tmp_path: Path) -> None:
    got = series(Rendered(fixture_view(tmp_path)).body(Format.TEXT))
    names = {label for _, labels in got for label, _ in labels}
    assert names <= ALLOWED_LABELS, names - ALLOWED_LABELS
    per_cgroup: dict[str, int] = {}
    for _, labels in got:
        cgroup = dict(labels).get("cgroup")
        if cgroup is not None:
            per_cgroup[cgroup] = per_cgroup.get(cgroup, 0) + 1
    # 9 cgroups of a 2-CPU machine; a per-CPU series would show as a count that grows with
    # CPUs. Bounded by the catalogue: one series per metric, per device, per event.
    assert max(per_cgroup.values()) <= len(CGROUP_METRICS) + 16
    assert set(per_cgroup) == {p or "/" for p in _fixture_cgroups()}


def test_counters_and_units_follow_the_conventions() -> None:
    for m in CATALOGUE:
        assert re.fullmatch(r"corral_[a-z0-9_]+", m.name), m.name
        assert m.name.endswith("_total") == (m.type == "counter"), m.name
        base = m.name.removesuffix("_total")
        assert not m.unit or base.endswith("_" + m.unit), m.name
        assert not re.search(r"percent|_ms$|_kb|_mb|_us$", m.name), m.name
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)


def test_help_names_the_kernel_file_and_the_age_of_the_data(tmp_path: Path) -> None:
    body = Rendered(fixture_view(tmp_path)).body(Format.TEXT).decode()
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", body, re.MULTILINE))
    for m in CGROUP_METRICS:
        assert f"From {m.source};" in helps[m.name], m.name
        assert "polled every 1s" in helps[m.name], m.name
        assert "corral_last_collect_timestamp_seconds" in helps[m.name], m.name


def test_every_metric_appears_for_every_cgroup_that_has_its_file(tmp_path: Path) -> None:
    got = series(Rendered(fixture_view(tmp_path)).body(Format.TEXT))
    present = {(name, dict(labels).get("cgroup")) for name, labels in got}
    missing = []
    for m in CGROUP_METRICS:
        for path in _fixture_cgroups():
            if _has_figure(m, FIXTURE / path) and (m.name, path or "/") not in present:
                missing.append(f"{m.name}{{cgroup={path or '/'}}}")
    assert not missing, missing
    assert {m.name for m in CGROUP_METRICS} <= {name for name, _ in present}


def _fixture_cgroups() -> list[str]:
    dirs = [p for p in FIXTURE.rglob("*") if p.is_dir()]
    return ["", *sorted(p.relative_to(FIXTURE).as_posix() for p in dirs)]


def _has_figure(m: Metric, directory: Path) -> bool:
    """Whether the kernel file behind ``m`` holds a figure there: the file exists, has the
    key the metric reads, and (for a limit) is not entirely "max"."""
    file = directory / m.file
    if not file.is_file():
        return False
    text = file.read_text()
    keys = [w for w in m.source.split()[1:] if "." not in w and w != "total"]
    words = re.split(r"[\s=]+", text)
    if m.file == "memory.current":
        keys = []  # the working set: memory.current less inactive_file, 0 when absent
    if keys and not any(k in words for k in keys):
        return False
    if m.file == "io.max":
        return any(f"{k}=" in text and f"{k}=max" not in text for k in keys)
    if m.file == "cpu.max":
        return not text.startswith("max")
    if "limit" in m.name:
        return text.strip() != "max"
    return bool(text.strip()) or m.file == "cgroup.procs"
