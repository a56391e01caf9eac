"""The shared cgroup v2 file formats (runtime.cgroupfs.formats) and the parsers built on them.

Well-formed input is what the kernel printed (the captured fixture trees): every file of a
format is parsed and printed back to the same text. Malformed input is typed by hand, since
the kernel never prints it: each case must raise ParseError naming the offending text, the
source and the form expected; keys a newer kernel may add must be tolerated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import MAX, CgroupError, ParseError, core, cpu, io, memory, pids
from runtime.cgroupfs.formats import (
    format_id_list,
    format_int_or_max,
    parse_flat_keyed,
    parse_id_list,
    parse_int,
    parse_int_or_max,
    parse_nested_keyed,
    parse_words,
)
from runtime.cgroupfs.pressure import parse_pressure

SOURCE = "/sys/fs/cgroup/test/file"

INT_FILES = {"memory.current", "memory.peak", "pids.current", "pids.peak", "cpu.weight"}
INT_OR_MAX_FILES = {*memory.LIMIT_FILES, "pids.max", "cgroup.max.depth", "memory.swap.high"}
ID_LIST_FILES = {"cpuset.cpus", "cpuset.mems", "cpuset.cpus.effective", "cpuset.mems.effective"}
FLAT_FILES = {"cpu.stat", "memory.stat", "memory.events", "pids.events", "cgroup.stat"}
NESTED_FILES = {"io.stat", "io.max", "memory.numa_stat", "cpu.pressure", "memory.pressure"}


def _texts(files: list[Any], names: set[str]) -> list[tuple[str, str]]:
    found = [(str(f), f.text) for f in files if f.name in names]
    assert {s.rsplit(":", 1)[1] for s, _ in found} == names, "the capture lacks a file kind"
    return found


# -- round trips over what the kernel printed ----------------------------------------------


def test_int_round_trip(all_captured_files: list[Any]) -> None:
    for source, text in _texts(all_captured_files, INT_FILES):
        assert str(parse_int(text, source)) == text.strip(), source


def test_int_or_max_round_trip(all_captured_files: list[Any]) -> None:
    seen_max = seen_int = False
    for source, text in _texts(all_captured_files, INT_OR_MAX_FILES):
        value = parse_int_or_max(text, source)
        assert format_int_or_max(value) == text.strip(), source
        seen_max |= value is MAX
        seen_int |= isinstance(value, int)
    assert seen_max and seen_int


def test_id_list_round_trip(all_captured_files: list[Any]) -> None:
    for source, text in _texts(all_captured_files, ID_LIST_FILES):
        assert format_id_list(parse_id_list(text, source)) == text.strip(), source


def test_flat_keyed_round_trip(all_captured_files: list[Any]) -> None:
    for source, text in _texts(all_captured_files, FLAT_FILES):
        values = parse_flat_keyed(text, source)
        assert "".join(f"{k} {v}\n" for k, v in values.items()) == text, source


def test_nested_keyed_round_trip(all_captured_files: list[Any]) -> None:
    for source, text in _texts(all_captured_files, NESTED_FILES):
        lines = parse_nested_keyed(text, source)
        printed = [" ".join([k, *(f"{n}={v}" for n, v in f.items())]) for k, f in lines.items()]
        # The root's io.stat prints "11:0 " (a device with no io yet) with a trailing space.
        assert printed == [line.rstrip() for line in text.splitlines()], source


def test_words_round_trip(all_captured_files: list[Any]) -> None:
    names = {"cgroup.controllers", "cgroup.subtree_control"}
    for source, text in _texts(all_captured_files, names):
        assert " ".join(parse_words(text)) == text.strip(), source


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        (set(), ""),
        ({0}, "0"),
        ({0, 1}, "0-1"),
        ({0, 1, 2, 3, 5, 7, 8}, "0-3,5,7-8"),
        ({1, 3, 5}, "1,3,5"),
        (set(range(64)) - {31}, "0-30,32-63"),
    ],
)
def test_id_list_table(ids: set[int], text: str) -> None:
    assert format_id_list(ids) == text
    assert parse_id_list(text, SOURCE) == frozenset(ids)
    assert parse_id_list(text + "\n", SOURCE) == frozenset(ids)


# -- malformed input -----------------------------------------------------------------------

Parse = Callable[[str, str], Any]

MALFORMED: list[tuple[str, Parse, str, str, str]] = [
    # (case, parser, text, the offending text the message must show, the form it must name)
    ("int empty", parse_int, "", "''", "a non-negative integer"),
    ("int negative", parse_int, "-1\n", "'-1'", "a non-negative integer"),
    ("int fraction", parse_int, "1.5", "'1.5'", "a non-negative integer"),
    ("int word", parse_int, "max", "'max'", "a non-negative integer"),
    ("int two words", parse_int, "1 2", "'1 2'", "a non-negative integer"),
    ("int hex", parse_int, "0x10", "'0x10'", "a non-negative integer"),
    ("int superscript", parse_int, "²", "'²'", "a non-negative integer"),
    ("int_or_max case", parse_int_or_max, "MAX", "'MAX'", "a non-negative integer"),
    ("int_or_max negative", parse_int_or_max, "-1", "'-1'", "a non-negative integer"),
    ("flat truncated", parse_flat_keyed, "usage_usec 1\nuser_usec\n", "'user_usec'", "KEY INT"),
    ("flat extra word", parse_flat_keyed, "usage_usec 1 2\n", "'usage_usec 1 2'", "KEY INT"),
    ("flat not a number", parse_flat_keyed, "usage_usec abc\n", "'usage_usec abc'", "KEY INT"),
    ("flat fraction", parse_flat_keyed, "oom_kill 1.5\n", "'oom_kill 1.5'", "KEY INT"),
    ("nested no =", parse_nested_keyed, "8:0 rbytes\n", "'8:0 rbytes'", "SUBKEY=VALUE"),
    ("nested no value", parse_nested_keyed, "8:0 rbytes=\n", "'8:0 rbytes='", "SUBKEY=VALUE"),
    ("nested no name", parse_nested_keyed, "8:0 =5\n", "'8:0 =5'", "SUBKEY=VALUE"),
    ("ids open range", parse_id_list, "0-", "'0-'", "a list like '0-3,5'"),
    ("ids no start", parse_id_list, "-3", "'-3'", "a list like '0-3,5'"),
    ("ids word", parse_id_list, "all", "'all'", "a list like '0-3,5'"),
    ("ids reversed", parse_id_list, "3-1\n", "'3-1'", "ranges written low-high"),
    ("ids superscript", parse_id_list, "²", "'²'", "a list like '0-3,5'"),
    ("cpu.stat no usage", cpu.parse_cpu_stat, "user_usec 1\nsystem_usec 2\n", "", "usage_usec"),
    ("cpu.stat truncated", cpu.parse_cpu_stat, "usage_usec 5\nuser_usec", "'user_usec'", "KEY"),
    ("cpu.stat nan", cpu.parse_cpu_stat, "usage_usec nan\n", "'usage_usec nan'", "KEY INT"),
    ("cpu.max one word", cpu.parse_cpu_max, "max\n", "'max'", "'QUOTA PERIOD' or 'max PERIOD'"),
    ("cpu.max empty", cpu.parse_cpu_max, "", "''", "'QUOTA PERIOD' or 'max PERIOD'"),
    ("cpu.max 3 words", cpu.parse_cpu_max, "1 2 3", "'1 2 3'", "'QUOTA PERIOD'"),
    ("cpu.max bad period", cpu.parse_cpu_max, "max -1", "'max -1'", "'QUOTA PERIOD'"),
    ("cpu.max bad quota", cpu.parse_cpu_max, "x 100000", "'x'", "a non-negative integer"),
    ("memory.events trunc", memory.parse_memory_events, "low 0\nhigh", "'high'", "KEY INT"),
    ("pids.events nan", pids.parse_pids_events, "max many\n", "'max many'", "KEY INT"),
    ("cgroup.events trunc", core.parse_cgroup_events, "populated\n", "'populated'", "KEY INT"),
    ("io.stat counter", io.parse_io_stat, "8:0 rbytes=x wbytes=1\n", "rbytes", "integer"),
    ("io.stat negative", io.parse_io_stat, "8:0 rbytes=-1\n", "-1", "non-negative integer"),
    ("io.stat device", io.parse_io_stat, "sda rbytes=1\n", "'sda'", "MAJ:MIN like 8:0"),
    ("io.stat truncated", io.parse_io_stat, "8:0 rbytes=1 wbytes\n", "wbytes", "SUBKEY=VALUE"),
    ("io.max value", io.parse_io_max, "8:0 rbps=fast\n", "'fast'", "a non-negative integer"),
    ("io.max device", io.parse_io_max, "8 rbps=max\n", "'8'", "MAJ:MIN like 8:0"),
    ("io.weight no value", io.parse_io_weight, "default\n", "'default'", "'default N'"),
    ("io.weight bad value", io.parse_io_weight, "default x\n", "'default x'", "'default N'"),
    ("io.weight device", io.parse_io_weight, "sda 100\n", "'sda'", "MAJ:MIN"),
    ("psi no some", parse_pressure, "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "", "some"),
    ("psi no total", parse_pressure, "some avg10=0.00 avg60=0.00 avg300=0.00\n", "avg10", "total"),
    ("psi bad avg", parse_pressure, "some avg10=x avg60=0 avg300=0 total=0\n", "=x", "avg10=F"),
    ("psi bad total", parse_pressure, "some avg10=0 avg60=0 avg300=0 total=.5\n", ".5", "total=N"),
    ("psi truncated", parse_pressure, "some avg10=0.00 avg60\n", "avg60", "SUBKEY=VALUE"),
    ("oom.group word", memory.parse_oom_group, "yes\n", "'yes'", "a non-negative integer"),
]


@pytest.mark.parametrize(
    ("parse", "text", "shown", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_input_is_rejected(parse: Parse, text: str, shown: str, allowed: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(text, SOURCE)
    message = str(caught.value)
    assert isinstance(caught.value, CgroupError) and isinstance(caught.value, ValueError)
    assert message.startswith(SOURCE), message
    assert shown in message and allowed in message, message


# -- keys a newer kernel may add are tolerated ----------------------------------------------


def _one(files: list[Any], name: str, cgroup: str = "capture/web") -> str:
    text: str = next(f.text for f in files if f.name == name and f.cgroup == cgroup)
    return text


def test_new_keys_are_tolerated(all_captured_files: list[Any]) -> None:
    """Lines and subkeys from later kernels (6.6 cpu.stat, iocost io.stat) change nothing."""
    files = all_captured_files
    cases: list[tuple[Callable[[str, str], Any], str, str]] = [
        (cpu.parse_cpu_stat, "cpu.stat", "core_sched.force_idle_usec 0\n"),
        (memory.parse_memory_events, "memory.events", "sock_throttled 3\n"),
        (pids.parse_pids_events, "pids.events", "max.forkfail 1\n"),
        (core.parse_cgroup_events, "cgroup.events", "dying 0\n"),
        (core.parse_cgroup_stat, "cgroup.stat", "nr_subsys_cpu 2\n"),
    ]
    for parse, name, extra in cases:
        text = _one(files, name)
        assert parse(text + extra, name) == parse(text, name), name
    stat = _one(files, "io.stat", "capture/batch/worker-2")
    wider = "".join(
        f"{line} cost.vrate=100.00 cost.usage=0 cost.wait=0 cost.indebt=0\n"
        for line in stat.splitlines()
    )
    assert io.parse_io_stat(wider) == io.parse_io_stat(stat)
    psi = _one(files, "memory.pressure")
    assert parse_pressure(psi.replace(" total=", " avg600=0.00 total=")) == parse_pressure(psi)
    assert parse_flat_keyed("\nhigh 1\n\n", SOURCE) == {"high": 1}  # blank lines


def test_cpu_stat_without_the_controller(host_cgroup2: Path) -> None:
    """The host's cgroup2 has no cpu controller (and a newer kernel's nice_usec line)."""
    text = (host_cgroup2 / "cpu.stat").read_text()
    stat = cpu.parse_cpu_stat(text, "cpu.stat")
    assert stat.usage_usec == parse_flat_keyed(text, "cpu.stat")["usage_usec"] > 0
    assert stat.nr_periods is None and stat.nr_throttled is None


def test_pressure_without_a_full_line(all_captured_files: list[Any]) -> None:
    """cpu.pressure had no ``full`` line before Linux 5.13: the captured one minus that line."""
    text = _one(all_captured_files, "cpu.pressure")
    some_only = parse_pressure(text.splitlines()[0] + "\n")
    assert some_only.full is None and some_only.some == parse_pressure(text).some
