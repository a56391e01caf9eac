"""dashboards.tui.rows: figures, cells, sort keys, tree folding and the filter, on the
deterministic fixture of tui_data (no app, no terminal)."""

from __future__ import annotations

import pytest
from rich.text import Text
from tui_data import CONTAINERS, GI, MI, PATHS, audit_entries, frame

from dashboards.tui.rows import (
    COLUMN_KEYS,
    CgroupRow,
    Shown,
    View,
    bar,
    cells,
    cgroup_rows,
    format_action,
    format_bytes,
    format_cores,
    format_limit,
    format_percent,
    format_pids,
    label,
    last_actions,
    matches,
    name_width,
    parent_of,
    sort_rows,
    sort_value,
    view,
)
from enforce.actions import Outcome
from runtime.cgroupfs.formats import MAX


def plain(cell: str | Text) -> str:
    return cell.plain if isinstance(cell, Text) else cell


@pytest.fixture(scope="module")
def rows() -> dict[str, CgroupRow]:
    return {r.path: r for r in cgroup_rows(frame())}


def paths(shown: list[Shown]) -> list[str]:
    return [s.row.path for s in shown]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0, "0B"),
        (512, "512B"),
        (1023, "1023B"),
        (1024, "1Ki"),
        (1536, "1.5Ki"),
        (448 * MI, "448Mi"),
        (1200 * MI, "1.2Gi"),
        (1023 * MI, "1023Mi"),
        (2 * GI, "2Gi"),
        (3.5 * (1 << 40), "3.5Ti"),
    ],
)
def test_format_bytes_iec(value: float | None, text: str) -> None:
    assert format_bytes(value) == text


def test_limits_cores_percent_pids() -> None:
    assert (format_limit(MAX), format_limit(None), format_limit(256 * MI)) == ("max", "-", "256Mi")
    assert format_cores(0.48, 0.96) == "0.48 96%"
    assert format_cores(0.22, None) == "0.22"
    assert format_cores(None, 0.5) == "-"
    assert [format_percent(r) for r in (None, 0.0, 0.005, 0.3, 1.0)] == [
        "-",
        "0%",
        "0.5%",
        "30%",
        "100%",
    ]
    assert [format_pids(24, 100), format_pids(12, MAX), format_pids(3, None)] == [
        "24/100",
        "12/max",
        "3",
    ]
    assert format_pids(None, 100) == "-"


def test_bar_fills_eighths_clamps_and_colours() -> None:
    half = bar(0.5)
    assert half.plain == "██  " and half.style == "green"
    assert bar(0.53).plain == "██▏ "  # 0.53 * 32 eighths = 17: two cells and an eighth
    assert bar(0.8).style == "yellow"
    over = bar(1.7)
    assert over.plain == "████" and over.style == "bold red"
    assert bar(-1).plain == "    "
    assert bar(None).plain == "    "


def test_action_cell_shows_bytes_in_iec_and_marks_refusals() -> None:
    entries = audit_entries()
    applied = format_action(entries[2])
    assert applied.plain == "memory.high=512Mi applied" and applied.style == ""
    refused = format_action(entries[1])
    assert refused.plain == "memory.high=96Mi refused" and refused.style == "red"
    assert format_action(entries[3]).plain == "memory.max=max dry-run"
    assert format_action(None).plain == "-"


def test_rows_hold_the_fixture_figures(rows: dict[str, CgroupRow]) -> None:
    assert list(rows) == sorted(PATHS)
    web = rows["corral/web"]
    assert (web.name, web.kind, web.parent, web.depth) == ("web", "container", "corral", 2)
    assert web.cpu_cores == pytest.approx(0.48) and web.cpu_ratio == pytest.approx(0.96)
    assert (web.memory, web.memory_limit, web.limit_file) == (448 * MI, 512 * MI, "memory.high")
    assert web.working_set == 448 * MI - 112 * MI
    assert web.throttled == pytest.approx(0.3)
    assert (web.pids, web.pids_max) == (24, 100)
    assert web.write_bps == 256 << 10 and web.read_bps == 0
    db = rows["corral/db"]  # memory.high is max: the limit is memory.max
    assert (db.memory_limit, db.limit_file, db.cpu_ratio) == (2 * GI, "memory.max", None)
    assert rows["corral/batch"].psi == pytest.approx(12.5)
    sshd = rows["system.slice/sshd.service"]
    assert (sshd.memory_limit, sshd.limit_file, sshd.pids_max) == (MAX, "memory.high", MAX)
    root = rows[""]
    assert (root.name, root.parent, root.depth, root.memory_limit) == ("/", None, 0, None)
    assert root.children == 3 and rows["corral"].children == 3


def test_last_action_is_the_newest_of_each_cgroup(rows: dict[str, CgroupRow]) -> None:
    newest = last_actions(audit_entries())
    assert set(newest) == {"corral/web", "corral/batch", "corral/db"}
    assert newest["corral/web"].new == "536870912"
    assert rows["corral/web"].action == newest["corral/web"]
    assert rows["corral/batch"].action is not None
    assert rows["corral/batch"].action.outcome is Outcome.REFUSED
    assert rows["user.slice"].action is None


def test_parent_skips_cgroups_not_in_the_snapshot() -> None:
    present = {"a": 1, "a/b/c": 1, "x": 1}
    assert parent_of("a/b/c", present) == "a"
    assert parent_of("a", present) is None
    assert parent_of("a", {"": 1, "a": 1}) == ""
    assert parent_of("", {"": 1}) is None


def test_sort_by_cpu_biggest_first_unknown_last(rows: dict[str, CgroupRow]) -> None:
    ordered = sort_rows(rows.values(), "cpu", reverse=True)
    assert paths([Shown(r, 0, False) for r in ordered])[:4] == [
        "",
        "corral",
        "corral/batch",
        "corral/web",
    ]
    # user.slice and its child tie at 0.25 cores: path order breaks the tie either way
    tie = [r.path for r in ordered if r.cpu_cores == pytest.approx(0.25)]
    assert tie == ["user.slice", "user.slice/user-1000.slice"]
    by_thr = [r.path for r in sort_rows(rows.values(), "thr", reverse=False)]
    assert by_thr[:4] == ["corral/batch", "corral/db", "corral/web", ""]  # 0, 0, 0.3, unknown
    by_thr_rev = [r.path for r in sort_rows(rows.values(), "thr", reverse=True)]
    assert by_thr_rev[0] == "corral/web" and sort_value(rows[by_thr_rev[-1]], "thr") is None


def test_every_column_has_a_sort_value(rows: dict[str, CgroupRow]) -> None:
    web = rows["corral/web"]
    values = {key: sort_value(web, key) for key in COLUMN_KEYS}
    assert values["name"] == "web" and values["kind"] == "container"
    assert values["mem"] == 448 * MI and values["pids"] == 24
    assert values["action"] == audit_entries()[2].time
    with pytest.raises(ValueError, match=r"'nope'.*one of name, kind, cpu"):
        sort_value(web, "nope")


def test_view_sorting_keys_cycle_and_reverse() -> None:
    spec = View()
    assert (spec.sort, spec.reverse) == ("cpu", True)
    assert spec.sorted_by("cpu").reverse is False  # the same column again reverses
    assert spec.sorted_by("name") == View(sort="name", reverse=False)  # text: A to Z first
    assert spec.sorted_by("mem").reverse is True  # numbers: biggest first
    assert spec.next_sort().sort == "wset"
    assert View(sort="action").next_sort().sort == "name"  # wraps around
    with pytest.raises(ValueError, match="sort column 'cpux'"):
        spec.sorted_by("cpux")


def test_tree_orders_children_under_parents(rows: dict[str, CgroupRow]) -> None:
    shown = view(list(rows.values()), View())
    assert paths(shown) == [
        "",
        "corral",
        "corral/batch",
        "corral/web",
        "corral/db",
        "user.slice",
        "user.slice/user-1000.slice",
        "system.slice",
        "system.slice/sshd.service",
        "system.slice/cron.service",
    ]
    assert [s.depth for s in shown[:3]] == [0, 1, 2]
    by_name = view(list(rows.values()), View(sort="name", reverse=False))
    assert paths(by_name)[1:3] == ["corral", "corral/batch"]
    assert paths(by_name)[5:7] == ["system.slice", "system.slice/cron.service"]


def test_folding_hides_descendants_only(rows: dict[str, CgroupRow]) -> None:
    spec = View().toggled_fold("corral")
    shown = view(list(rows.values()), spec)
    assert "corral" in paths(shown)
    assert not set(CONTAINERS) & set(paths(shown))
    assert next(s for s in shown if s.row.path == "corral").folded
    assert len(view(list(rows.values()), spec.toggled_fold("corral"))) == len(rows)
    whole = view(list(rows.values()), View().toggled_fold(""))
    assert paths(whole) == [""] and whole[0].folded
    leaf = view(list(rows.values()), View().toggled_fold("corral/web"))  # nothing to fold
    assert len(leaf) == len(rows) and not any(s.folded for s in leaf)


def test_filter_keeps_matches_with_their_ancestors(rows: dict[str, CgroupRow]) -> None:
    shown = view(list(rows.values()), View(filter="WEB"))
    assert paths(shown) == ["", "corral", "corral/web"]
    folded = View(filter="service", folded=frozenset({"system.slice"}))
    assert paths(view(list(rows.values()), folded)) == [
        "",
        "system.slice",
        "system.slice/sshd.service",
        "system.slice/cron.service",
    ]
    assert view(list(rows.values()), View(filter="no such cgroup")) == []


def test_flat_view_is_containers_only(rows: dict[str, CgroupRow]) -> None:
    flat = view(list(rows.values()), View(tree=False, sort="name", reverse=False))
    assert paths(flat) == ["corral/batch", "corral/db", "corral/web"]
    assert all(s.depth == 0 and not s.folded for s in flat)
    assert paths(view(list(rows.values()), View(tree=False, filter="d"))) == ["corral/db"]
    assert paths(view(list(rows.values()), View(tree=False, filter="slice"))) == []


def test_matches_path_name_or_kind(rows: dict[str, CgroupRow]) -> None:
    web = rows["corral/web"]
    assert matches(web, "corral/") and matches(web, "CONTAINER") and matches(web, "we")
    assert not matches(web, "db")
    assert matches(rows[""], "/")


def test_labels_indent_mark_and_truncate(rows: dict[str, CgroupRow]) -> None:
    web, corral = rows["corral/web"], rows["corral"]
    assert label(web, Shown(web, 2, False)) == "      web"
    assert label(corral, Shown(corral, 1, False)) == "  ▾ corral"
    assert label(corral, Shown(corral, 1, True)) == "  ▸ corral"
    assert label(web) == "web"
    long = CgroupRow("x" * 40, None, 0, "x" * 40, "cgroup")
    assert label(long) == "x" * 27 + "…"
    shown = view(list(rows.values()), View())
    assert name_width(shown, True) == len("      user-1000.slice")
    assert name_width([], True) == 10


def test_cells_of_a_container_row(rows: dict[str, CgroupRow]) -> None:
    web = rows["corral/web"]
    got = [plain(c) for c in cells(Shown(web, 2, False), tree=False)]
    assert got == [
        "web",
        "container",
        "0.48 96%",
        "336Mi",
        "448Mi/512Mi ███▌",
        "0.0",
        "0B",
        "256Ki",
        "24/100",
        "30%",
        "memory.high=512Mi applied",
    ]
    root = [plain(c) for c in cells(Shown(rows[""], 0, False), tree=True)]
    assert root[:5] == ["▾ /", "cgroup", "1.75", "2.2Gi", "3Gi/-"]
    assert root[-2:] == ["-", "-"]  # no cpu.max: no throttling figure; no action
