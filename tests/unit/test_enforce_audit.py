"""The audit log: JSON lines that round-trip to AuditEntry, appended one write(2) per line
by several writers without interleaving, read back with ``since``, kept in memory."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from enforce.actions import Action, AuditEntry, IoLimit, Mode, Outcome, Value
from enforce.audit import AuditError, AuditLog, from_json, read_audit, to_json
from runtime.cgroupfs import MAX
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.io import Device, IoMax


def entry(t: float = 1.5, **kw: object) -> AuditEntry:
    values: dict[str, object] = {
        "time": t,
        "rule": "web",
        "controller": "memory_pressure",
        "cgroup": "corral/web",
        "file": "memory.high",
        "old": "536870912",
        "new": "541065216",
        "mode": Mode.ENFORCE,
        "outcome": Outcome.APPLIED,
        "reason": "pressure 12 ms > 10 ms: back off",
        "inputs": {"pressure_usec": 12000.0, "memory_current": 500000000, "note": "ü"},
    }
    values.update(kw)
    return AuditEntry(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "e",
    [
        entry(),
        entry(old=None, outcome=Outcome.REFUSED, reason="outside managed_root 'corral'"),
        entry(mode=Mode.DRY_RUN, outcome=Outcome.DRY_RUN, inputs={}),
        entry(mode=Mode.RECOMMEND, outcome=Outcome.RECOMMENDED),
        entry(outcome=Outcome.SKIPPED, cgroup='we"ird\nname'),
        entry(outcome=Outcome.FAILED, time=1764375600.123456),
    ],
)
def test_to_json_from_json_round_trip(e: AuditEntry) -> None:
    line = to_json(e)
    assert "\n" not in line
    assert from_json(line) == e
    data = json.loads(line)
    assert data["mode"] == e.mode.value and data["outcome"] == e.outcome.value


def test_entries_of_every_value_type_round_trip() -> None:
    device = Device(8, 0)
    cases: list[tuple[str, Value | None, Value]] = [
        ("memory.max", MAX, 1 << 30),
        ("cpu.max", CpuMax(50_000), CpuMax(MAX)),
        ("io.max", None, IoLimit(device, IoMax(rbps=1 << 20))),
        ("cgroup.freeze", False, True),
        ("pids.max", 100, MAX),
    ]
    for file, old, new in cases:
        action = Action("r", "limits", "corral/a", file, old, new, Mode.ENFORCE, "why")
        e = AuditEntry.of(action, Outcome.APPLIED, 10.0)
        assert from_json(to_json(e)) == e
    io = AuditEntry.of(
        Action("r", "io_pressure", "c", "io.max", None, IoLimit(device, IoMax(wbps=5)),
               Mode.ENFORCE, "x"),
        Outcome.APPLIED, 1.0,
    )  # fmt: skip
    assert json.loads(to_json(io))["new"] == "8:0 rbps=max wbps=5 riops=max wiops=max"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"time": 1}', "missing rule"),
        (to_json(entry()).replace('"enforce"', '"sometimes"'), "'sometimes'"),
        (to_json(entry()).replace('"applied"', '"done"'), "'done'"),
        (to_json(entry()).replace('"corral/web"', "7"), "cgroup 7: expected a string"),
        (to_json(entry()).replace('"ü"', "true"), "inputs.note True"),
    ],
)
def test_bad_line_names_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(AuditError, match=None) as e:
        from_json(line)
    assert message in str(e.value)


def test_log_makes_its_directory_appends_and_keeps_recent(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log" / "corral" / "audit.jsonl"
    with AuditLog(str(path), keep=3) as log:
        for t in range(5):
            log.write(entry(float(t)))
        assert [e.time for e in log.recent()] == [2.0, 3.0, 4.0]
    with AuditLog(str(path)) as log:  # a second writer appends, never truncates
        log.write(entry(5.0))
    assert [e.time for e in read_audit(str(path))] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [e.time for e in read_audit(str(path), since=3.0)] == [3.0, 4.0, 5.0]
    assert path.read_text().count("\n") == 6


def test_memory_only_log_writes_no_file(tmp_path: Path) -> None:
    log = AuditLog(None, keep=2)
    log.write(entry(1.0))
    assert log.recent() == [entry(1.0)]
    assert list(tmp_path.iterdir()) == []


def test_missing_log_reads_empty_and_bad_line_names_its_number(tmp_path: Path) -> None:
    assert read_audit(str(tmp_path / "none.jsonl")) == []
    path = tmp_path / "a.jsonl"
    path.write_text(to_json(entry()) + "\n" + "garbage\n" + to_json(entry()) + "\n")
    with pytest.raises(AuditError, match=r"a\.jsonl:2: "):
        read_audit(str(path))


def test_unfinished_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    whole = to_json(entry(1.0))
    path.write_text(whole + "\n" + whole[: len(whole) // 2])
    assert read_audit(str(path)) == [entry(1.0)]


def _writer(path: str, tag: str, count: int) -> None:
    with AuditLog(path) as log:
        for i in range(count):
            log.write(entry(float(i), rule=tag, reason="x" * 3000))


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "a.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, f"w{n}", 200)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = read_audit(path)  # raises on any torn or mixed line
    assert len(entries) == 800
    for n in range(4):
        assert [e.time for e in entries if e.rule == f"w{n}"] == [float(i) for i in range(200)]
