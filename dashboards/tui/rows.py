"""Pure: a Frame -> the main table's rows (figures, cells, sort keys, tree folding, filter).

One ``CgroupRow`` per cgroup of the snapshot holds its figures as numbers (None where the
kernel gave none: the first poll has no rates, a controller is not enabled); ``view`` orders,
folds and filters them for a ``View``; ``cells`` formats one row as the table shows it.
Figures follow the dashboard's conventions: CPU in cores and % of cpu.max, bytes in IEC units,
ratios as %, a limit that is ``max`` as "max", an unknown figure as "-".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from rich.text import Text

from dashboards.tui.sources.base import Frame
from enforce.actions import AuditEntry, Outcome
from monitor.sample import CgroupSample
from runtime.cgroupfs.formats import MAX, IntOrMax

Limit: TypeAlias = IntOrMax | None  # None: the file is absent (controller not enabled)
Cell: TypeAlias = str | Text
NAME_WIDTH = 28
BAR_WIDTH = 4
_IEC = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_EIGHTHS = " ▏▎▍▌▋▊▉"
# Names of cgroups whose runtime gives them a name other than their path's last component.
_NAMED_KINDS = frozenset({"container", "docker", "podman", "kubernetes"})


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; ``numeric`` columns sort biggest first on their first press.
    ``width`` is fixed (cells), so figures changing frame to frame never move the columns;
    the name column's is fitted to the names shown (``name_width``)."""

    key: str
    label: str
    numeric: bool
    width: int


COLUMNS: tuple[Column, ...] = (
    Column("name", "NAME", False, NAME_WIDTH),
    Column("kind", "KIND", False, 9),
    Column("cpu", "CPU", True, 10),
    Column("wset", "WSET", True, 6),
    Column("mem", "MEM/LIMIT", True, 18),
    Column("psi", "PSI", True, 5),
    Column("read", "READ/s", True, 6),
    Column("write", "WRITE/s", True, 7),
    Column("pids", "PIDS", True, 9),
    Column("thr", "THR", True, 4),
    Column("action", "LAST ACTION", True, 30),
)
COLUMN_KEYS: tuple[str, ...] = tuple(c.key for c in COLUMNS)
_BY_KEY = {c.key: c for c in COLUMNS}


@dataclass(frozen=True, slots=True)
class CgroupRow:
    """One cgroup's figures. ``parent`` is the nearest ancestor in the snapshot (None at the
    top); ``memory_limit`` is the lower of memory.high and memory.max (``limit_file`` says
    which); ``psi`` is memory.pressure "some" avg10 in percent; ``throttled`` a fraction."""

    path: str
    parent: str | None
    depth: int
    name: str
    kind: str
    cpu_cores: float | None = None
    cpu_ratio: float | None = None
    working_set: int | None = None
    memory: int | None = None
    memory_limit: Limit = None
    limit_file: str = ""
    psi: float | None = None
    read_bps: float | None = None
    write_bps: float | None = None
    pids: int | None = None
    pids_max: Limit = None
    throttled: float | None = None
    action: AuditEntry | None = None
    children: int = 0


@dataclass(frozen=True, slots=True)
class View:
    """How the table is shown: sorted by ``sort`` (``reverse`` for biggest first), filtered
    by a case-insensitive substring of path, name or kind, as a tree (``folded`` paths hide
    their descendants) or as a flat list of containers."""

    sort: str = "cpu"
    reverse: bool = True
    filter: str = ""
    tree: bool = True
    folded: frozenset[str] = field(default_factory=frozenset)

    def sorted_by(self, key: str) -> View:
        """Sorted by ``key``; the same key again reverses the order."""
        if key not in _BY_KEY:
            raise ValueError(f"sort column {key!r}: one of {', '.join(COLUMN_KEYS)}")
        if key == self.sort:
            return replace(self, reverse=not self.reverse)
        return replace(self, sort=key, reverse=_BY_KEY[key].numeric)

    def next_sort(self) -> View:
        """Sorted by the column after the current one (wrapping around)."""
        i = COLUMN_KEYS.index(self.sort)
        return self.sorted_by(COLUMN_KEYS[(i + 1) % len(COLUMN_KEYS)])

    def toggled_fold(self, path: str) -> View:
        return replace(self, folded=self.folded ^ {path})


@dataclass(frozen=True, slots=True)
class Shown:
    """A row as the table shows it: in tree mode with its depth and fold state."""

    row: CgroupRow
    depth: int
    folded: bool


# --- formatting -------------------------------------------------------------------------------


def format_bytes(n: float | None) -> str:
    """IEC units: "512B", "4Ki", "1.5Gi", "448Mi"; "-" when unknown."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for next_unit in _IEC:
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    if unit == "B" or value >= 10 or value == int(value):
        return f"{value:.0f}{unit}"
    return f"{value:.1f}{unit}"


def format_limit(limit: Limit) -> str:
    if limit is None:
        return "-"
    return "max" if limit is MAX else format_bytes(limit)


def format_percent(ratio: float | None) -> str:
    """A fraction as a percentage: "12%", "0.5%"; "-" when unknown."""
    if ratio is None:
        return "-"
    pct = ratio * 100
    return f"{pct:.1f}%" if 0 < pct < 10 else f"{pct:.0f}%"


def format_cores(cores: float | None, ratio: float | None) -> str:
    """ "0.48 96%" (cores, and % of cpu.max when set); "-" when unknown."""
    if cores is None:
        return "-"
    text = f"{cores:.2f}"
    return f"{text} {ratio * 100:.0f}%" if ratio is not None else text


def bar(ratio: float | None, width: int = BAR_WIDTH) -> Text:
    """A small horizontal bar of ``ratio`` (clamped to 0..1) in eighths of a cell, coloured by
    how close it is to 1: green below 75%, yellow below 90%, red from there."""
    if ratio is None:
        return Text(" " * width)
    eighths = round(min(max(ratio, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    cells = "█" * full + (_EIGHTHS[part] if part else "")
    style = "green" if ratio < 0.75 else "yellow" if ratio < 0.9 else "bold red"
    return Text(cells.ljust(width), style=style)


def format_memory(row: CgroupRow) -> Text:
    """ "448Mi/512Mi ███▌": memory.current against its lower limit, with a bar when that
    limit is a number."""
    text = Text(f"{format_bytes(row.memory)}/{format_limit(row.memory_limit)}")
    if isinstance(row.memory_limit, int) and row.memory is not None and row.memory_limit:
        return text + " " + bar(row.memory / row.memory_limit)
    return text


def format_pids(pids: int | None, pids_max: Limit) -> str:
    if pids is None:
        return "-"
    if pids_max is None:
        return str(pids)
    return f"{pids}/{'max' if pids_max is MAX else pids_max}"


def format_action(entry: AuditEntry | None) -> Text:
    """ "memory.high=512Mi applied"; a refusal or failure in red, a dry run dimmed."""
    if entry is None:
        return Text("-")
    value = entry.new
    if entry.file.startswith("memory.") and value.isdigit():
        value = format_bytes(int(value))
    style = {
        Outcome.REFUSED: "red",
        Outcome.FAILED: "bold red",
        Outcome.DRY_RUN: "dim",
        Outcome.RECOMMENDED: "dim",
        Outcome.SKIPPED: "dim",
    }.get(entry.outcome, "")
    return Text(f"{entry.file}={value} {entry.outcome.value}", style=style)


def format_rate(bps: float | None) -> str:
    return format_bytes(bps)


def label(row: CgroupRow, shown: Shown | None = None, width: int = NAME_WIDTH) -> str:
    """The name cell: in a tree, indented by depth with ▾/▸ on a node that has children."""
    prefix = ""
    if shown is not None:
        marker = ("▸ " if shown.folded else "▾ ") if row.children else "  "
        prefix = "  " * shown.depth + marker
    text = prefix + row.name
    return text if len(text) <= width else text[: width - 1] + "…"


def name_width(shown: Iterable[Shown], tree: bool) -> int:
    """The name column's width for these rows: the longest label, 10 to NAME_WIDTH."""
    longest = max((len(label(s.row, s if tree else None)) for s in shown), default=0)
    return min(max(longest, 10), NAME_WIDTH)


def cells(shown: Shown, tree: bool) -> tuple[Cell, ...]:
    """The table cells of one row, in COLUMNS order."""
    row = shown.row
    return (
        label(row, shown if tree else None),
        row.kind,
        format_cores(row.cpu_cores, row.cpu_ratio),
        format_bytes(row.working_set),
        format_memory(row),
        "-" if row.psi is None else f"{row.psi:.1f}",
        format_rate(row.read_bps),
        format_rate(row.write_bps),
        format_pids(row.pids, row.pids_max),
        format_percent(row.throttled),
        format_action(row.action),
    )


# --- building rows from a frame ----------------------------------------------------------------


def last_actions(audit: Iterable[AuditEntry]) -> dict[str, AuditEntry]:
    """The newest audit entry of each cgroup."""
    newest: dict[str, AuditEntry] = {}
    for entry in audit:
        seen = newest.get(entry.cgroup)
        if seen is None or entry.time >= seen.time:
            newest[entry.cgroup] = entry
    return newest


def parent_of(path: str, present: Mapping[str, object]) -> str | None:
    """The nearest ancestor of ``path`` in ``present`` ("" is the root's path)."""
    while path:
        path = path.rpartition("/")[0]
        if path in present:
            return path
    return None


def _memory_limit(sample: CgroupSample) -> tuple[Limit, str]:
    """The lower of memory.high and memory.max (a number beats max; max beats absent)."""
    high, top = sample.limits.memory_high, sample.limits.memory_max
    candidates = [(v, f) for v, f in ((high, "memory.high"), (top, "memory.max")) if v is not None]
    numbers = [(v, f) for v, f in candidates if isinstance(v, int)]
    if numbers:
        return min(numbers, key=lambda c: c[0])
    return (MAX, candidates[0][1]) if candidates else (None, "")


def cgroup_rows(frame: Frame) -> list[CgroupRow]:
    """One row per cgroup of the frame's snapshot, in path order."""
    snapshot = frame.snapshot
    cgroups = snapshot.sample.cgroups
    actions = last_actions(frame.audit)
    parents = {path: parent_of(path, cgroups) for path in cgroups}
    children: dict[str, int] = {}
    for parent in parents.values():
        if parent is not None:
            children[parent] = children.get(parent, 0) + 1
    rows = []
    for path in sorted(cgroups):
        sample, model = cgroups[path], snapshot.models[path]
        naming = snapshot.names.get(path)
        kind = naming.kind if naming else "cgroup"
        name = naming.name if naming and kind in _NAMED_KINDS else path.rpartition("/")[2]
        limit, limit_file = _memory_limit(sample)
        memory_psi = sample.pressure.get("memory")
        depth, up = 0, parents[path]
        while up is not None:
            depth, up = depth + 1, parents[up]
        rows.append(
            CgroupRow(
                path=path,
                parent=parents[path],
                depth=depth,
                name=name or "/",
                kind=kind,
                cpu_cores=model.cpu_cores,
                cpu_ratio=model.cpu_limit_ratio,
                working_set=model.working_set_bytes,
                memory=sample.memory_current,
                memory_limit=limit,
                limit_file=limit_file,
                psi=memory_psi.some.avg10 if memory_psi else None,
                read_bps=model.io_read_bytes_per_second,
                write_bps=model.io_write_bytes_per_second,
                pids=sample.pids_current,
                pids_max=sample.limits.pids_max,
                throttled=model.throttled_ratio,
                action=actions.get(path),
                children=children.get(path, 0),
            )
        )
    return rows


# --- sorting, filtering, folding ---------------------------------------------------------------


def sort_value(row: CgroupRow, key: str) -> float | str | None:
    """What column ``key`` sorts ``row`` by; None (unknown) sorts last either way."""
    if key == "name":
        return row.name.lower()
    if key == "kind":
        return row.kind
    if key == "action":
        return row.action.time if row.action else None
    values = {
        "cpu": row.cpu_cores,
        "wset": row.working_set,
        "mem": row.memory,
        "pids": row.pids,
        "psi": row.psi,
        "read": row.read_bps,
        "write": row.write_bps,
        "thr": row.throttled,
    }
    if key not in values:
        raise ValueError(f"sort column {key!r}: one of {', '.join(COLUMN_KEYS)}")
    return values[key]


def sort_rows(rows: Iterable[CgroupRow], key: str, reverse: bool) -> list[CgroupRow]:
    """Sorted by column ``key`` (ties by path, always ascending); unknown figures last."""
    by_path = sorted(rows, key=lambda r: r.path)
    known = [r for r in by_path if sort_value(r, key) is not None]
    unknown = [r for r in by_path if sort_value(r, key) is None]
    known.sort(key=lambda r: sort_value(r, key), reverse=reverse)  # type: ignore[arg-type,return-value]
    return known + unknown


def matches(row: CgroupRow, text: str) -> bool:
    """Case-insensitive substring of the path, the name or the kind."""
    needle = text.lower()
    return any(needle in s.lower() for s in (row.path or "/", row.name, row.kind))


def view(rows: Sequence[CgroupRow], spec: View) -> list[Shown]:
    """The rows to show, in order. Flat: containers only, sorted and filtered. Tree: each
    node's children sorted under it; a filter keeps the matches and their ancestors (and
    then ignores folds, so no match is hidden); a folded node hides its descendants."""
    if not spec.tree:
        flat = [r for r in rows if r.kind == "container"]
        if spec.filter:
            flat = [r for r in flat if matches(r, spec.filter)]
        return [Shown(r, 0, False) for r in sort_rows(flat, spec.sort, spec.reverse)]
    by_path = {r.path: r for r in rows}
    keep: set[str] | None = None
    if spec.filter:
        keep = set()
        for r in rows:
            if matches(r, spec.filter):
                path: str | None = r.path
                while path is not None and path not in keep:
                    keep.add(path)
                    path = by_path[path].parent
    kids: dict[str | None, list[CgroupRow]] = {}
    for r in sort_rows(rows, spec.sort, spec.reverse):
        if keep is None or r.path in keep:
            kids.setdefault(r.parent, []).append(r)
    shown: list[Shown] = []
    _walk(kids, None, 0, spec.folded if keep is None else frozenset(), shown)
    return shown


def _walk(
    kids: Mapping[str | None, list[CgroupRow]],
    parent: str | None,
    depth: int,
    folded: frozenset[str],
    out: list[Shown],
) -> None:
    for r in kids.get(parent, ()):
        is_folded = r.path in folded and r.children > 0
        out.append(Shown(r, depth, is_folded))
        if not is_folded:
            _walk(kids, r.path, depth + 1, folded, out)
