"""Cgroup directory names with quotes, backslashes, newlines, non-ASCII and non-UTF-8 bytes
still give a valid exposition (promtool) whose labels read back as the names."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from test_exporter_support import BUILD, FIXTURE, promtool_check, read_host

from monitor.exporter.render import ExportView, Format, Rendered, cgroup_label, safe_text
from monitor.snapshot import CgroupName, build_snapshot
from runtime.cgroupfs import CgroupFS

NAMES = [
    'say "hi"',
    "back\\slash\\n",  # a backslash and an "n": must not come back as a newline
    "ünïcødé ☃ 日本",
    'a"b/c\\d',  # nested, both kinds of character at two levels
    "trailing\\",
    "}{,=# HELP",
]
LATIN1 = b"caf\xe9"  # not UTF-8: os.scandir hands it over as a surrogate
NEWLINE = "new\nline"  # the kernel refuses it at mkdir, but the exporter must not care


def weird_tree(tmp: Path) -> CgroupFS:
    root = tmp / "cgroup"
    root.mkdir()
    seed = FIXTURE / "capture" / "web"
    for name in NAMES:
        shutil.copytree(seed, root / name, dirs_exist_ok=True)
    shutil.copytree(seed, os.fsdecode(bytes(root) + b"/" + LATIN1))
    return CgroupFS(root, verify=False)


def weird_view(tmp: Path) -> ExportView:
    sample = read_host(weird_tree(tmp))
    web = next(s for p, s in sample.cgroups.items() if p == 'say "hi"')
    cgroups = {**sample.cgroups, NEWLINE: dataclasses.replace(web, path=NEWLINE)}
    sample = dataclasses.replace(sample, cgroups=cgroups)
    names = {p: CgroupName(p, "container", p, f'id"{i}\\') for i, p in enumerate(cgroups)}
    snap = build_snapshot(None, sample, seq=1, names=names, collect_seconds=0.01)
    return ExportView(snap, {}, 1.0, str(tmp / "nosys"), BUILD)


def expected_labels() -> set[str]:
    """The cgroups with a cpu.stat: all but the root and 'a"b' (made by mkdir, empty)."""
    return {*NAMES, NEWLINE, "caf\\xe9"}


def test_weird_names_give_an_exposition_promtool_accepts(tmp_path: Path) -> None:
    body = Rendered(weird_view(tmp_path)).body(Format.TEXT)
    promtool_check(body)
    assert b'cgroup="say \\"hi\\""' in body
    assert b'cgroup="back\\\\slash\\\\n"' in body
    assert b'cgroup="new\\nline"' in body


def test_weird_names_read_back_exactly(tmp_path: Path) -> None:
    rendered = Rendered(weird_view(tmp_path))
    for fmt, parse in ((Format.TEXT, parse_text), (Format.OPENMETRICS, parse_om)):
        labels = {
            s.labels["cgroup"]
            for family in parse(rendered.body(fmt).decode())
            for s in family.samples
            if family.name == "corral_cpu_usage_seconds"
        }
        assert labels == expected_labels(), fmt
        info = [
            s
            for f in parse(rendered.body(fmt).decode())
            for s in f.samples
            if s.name == "corral_cgroup_info" and s.labels["cgroup"] == NEWLINE
        ]
        assert info and info[0].labels["id"].startswith('id"') and info[0].labels["id"][-1] == "\\"


def test_a_non_utf8_name_is_shown_with_backslash_escapes() -> None:
    assert cgroup_label(os.fsdecode(b"x/" + LATIN1)) == "x/caf\\xe9"
    assert cgroup_label("") == "/"
    assert cgroup_label("ünï/☃") == "ünï/☃"
    assert safe_text("lone \ud800") == "lone \\ud800"
