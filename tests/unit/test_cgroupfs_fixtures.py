"""runtime.cgroupfs against cgroup trees captured from a real kernel (tools/capture_fixtures.py).

Every captured interface file goes through its parser (the PARSERS table: a file this table
does not know fails the suite); every limit the capture set reads back as the value corral's
limit syntax gave it; then the tree is read through ``CgroupFS(copy, verify=False)`` and the
``read_*`` functions. What the workloads did is asserted in test_cgroupfs_workloads.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.cgroupfs import CgroupFS, core, cpu, cpuset, io, memory, pids, pressure
from runtime.cgroupfs.formats import (
    parse_flat_keyed,
    parse_id_list,
    parse_int,
    parse_int_or_max,
    parse_nested_keyed,
    parse_words,
)
from runtime.cgroupfs.limit_syntax import parse_cpus, parse_io_limit, parse_size

Parser = Callable[[str, str], Any]

CONTROLLERS = {"cpuset", "cpu", "io", "memory", "pids"}
# Every kind of limit the capture must have set somewhere (the brief of the capture script).
LIMIT_KINDS = {
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    *memory.LIMIT_FILES,
    "memory.oom.group",
    "io.max",
    "io.weight",
    "pids.max",
    "cpuset.cpus",
    "cpuset.mems",
}


# Files corral has no dedicated parser for are still checked against the kernel's format.
def _pid_list(text: str, source: str) -> list[int]:
    return [parse_int(word, source) for word in text.split()]


def _nice(text: str, source: str) -> int:
    value = int(text)  # cpu.weight.nice is the one signed single-value file
    assert -20 <= value <= 19, source
    return value


def _one_of(*allowed: str) -> Parser:
    def parse(text: str, source: str) -> str:
        assert text.strip() in allowed, f"{source}: {text!r} not in {allowed}"
        return text.strip()

    return parse


def _numa_pairs(text: str, source: str) -> dict[str, int]:
    """hugetlb.<size>.numa_stat: one line of KEY=VALUE pairs with no leading key."""
    pairs = dict(word.partition("=")[::2] for word in text.split())
    return {k: parse_int(v, source) for k, v in pairs.items()}


def _controllers(text: str, source: str) -> list[str]:
    words = parse_words(text)
    assert set(words) <= {*CONTROLLERS, "hugetlb", "rdma", "misc"}, source
    return words


PARSERS: dict[str, Parser] = {
    "cgroup.controllers": _controllers,
    "cgroup.subtree_control": _controllers,
    "cgroup.events": core.parse_cgroup_events,
    "cgroup.stat": core.parse_cgroup_stat,
    "cgroup.freeze": parse_int,
    "cgroup.max.depth": parse_int_or_max,
    "cgroup.max.descendants": parse_int_or_max,
    "cgroup.pressure": parse_int,
    "cgroup.procs": _pid_list,
    "cgroup.threads": _pid_list,
    "cgroup.type": _one_of("domain", "domain threaded", "domain invalid", "threaded"),
    "cpu.stat": cpu.parse_cpu_stat,
    "cpu.max": cpu.parse_cpu_max,
    "cpu.max.burst": parse_int,
    "cpu.weight": parse_int,
    "cpu.weight.nice": _nice,
    "cpu.idle": parse_int,
    "cpu.pressure": pressure.parse_pressure,
    "io.pressure": pressure.parse_pressure,
    "memory.pressure": pressure.parse_pressure,
    "cpuset.cpus": parse_id_list,
    "cpuset.mems": parse_id_list,
    "cpuset.cpus.effective": parse_id_list,
    "cpuset.mems.effective": parse_id_list,
    "cpuset.cpus.partition": _one_of("member", "root", "isolated"),
    "io.stat": io.parse_io_stat,
    "io.max": io.parse_io_max,
    "io.weight": io.parse_io_weight,
    "io.cost.model": parse_nested_keyed,
    "io.cost.qos": parse_nested_keyed,
    "memory.current": parse_int,
    "memory.peak": parse_int,
    "memory.swap.current": parse_int,
    "memory.zswap.current": parse_int,
    **{name: parse_int_or_max for name in memory.LIMIT_FILES},
    "memory.swap.high": parse_int_or_max,
    "memory.zswap.max": parse_int_or_max,
    "memory.events": memory.parse_memory_events,
    "memory.events.local": memory.parse_memory_events,
    "memory.swap.events": parse_flat_keyed,
    "memory.stat": memory.parse_memory_stat,
    "memory.numa_stat": parse_nested_keyed,
    "memory.oom.group": memory.parse_oom_group,
    "misc.capacity": parse_flat_keyed,
    "pids.current": parse_int,
    "pids.peak": parse_int,
    "pids.max": parse_int_or_max,
    "pids.events": pids.parse_pids_events,
    # hugetlb, misc and rdma are enabled at the root, so capture/ has their files.
    "hugetlb.<size>.current": parse_int,
    "hugetlb.<size>.rsvd.current": parse_int,
    "hugetlb.<size>.max": parse_int_or_max,
    "hugetlb.<size>.rsvd.max": parse_int_or_max,
    "hugetlb.<size>.events": parse_flat_keyed,
    "hugetlb.<size>.events.local": parse_flat_keyed,
    "hugetlb.<size>.numa_stat": _numa_pairs,
    "misc.current": parse_flat_keyed,
    "misc.events": parse_flat_keyed,
    "misc.max": parse_flat_keyed,
    "rdma.current": parse_nested_keyed,
    "rdma.max": parse_nested_keyed,
}


def parser_for(name: str) -> Parser | None:
    return PARSERS.get(re.sub(r"^hugetlb\.\d+[KMG]B\.", "hugetlb.<size>.", name))


def test_a_capture_exists(all_captured_files: list[Any]) -> None:
    assert all_captured_files, "no fixture tree: run `make fixtures`"


def test_every_captured_file_has_a_parser(all_captured_files: list[Any]) -> None:
    unknown = sorted({f.name for f in all_captured_files if parser_for(f.name) is None})
    assert not unknown, f"captured files without an entry in PARSERS: {unknown}"


def test_captured_file_parses(captured_file: Any) -> None:
    text = captured_file.text
    parse = parser_for(captured_file.name)
    assert parse is not None, f"no parser for {captured_file.name}"
    parsed = parse(text, str(captured_file))
    if text.strip() and isinstance(parsed, dict | list):
        assert parsed, f"{captured_file}: non-empty text parsed to nothing"


# -- the limits the capture set read back as set -------------------------------------------

LIMIT_READBACK: dict[str, tuple[Parser, Callable[[str], Any]]] = {
    "cpu.max": (cpu.parse_cpu_max, parse_cpus),
    "cpu.max.burst": (parse_int, int),
    "cpu.weight": (parse_int, int),
    **{name: (parse_int_or_max, parse_size) for name in memory.LIMIT_FILES},
    "memory.oom.group": (memory.parse_oom_group, lambda spec: spec == "1"),
    "pids.max": (parse_int_or_max, lambda spec: parse_int_or_max(spec, "spec")),
    "io.weight": (lambda text, src: io.parse_io_weight(text, src).default, int),
    "cpuset.cpus": (parse_id_list, lambda spec: parse_id_list(spec, "spec")),
    "cpuset.mems": (parse_id_list, lambda spec: parse_id_list(spec, "spec")),
}


def test_every_kind_of_limit_was_set(capture: dict[str, Any]) -> None:
    kinds = {name for entry in capture["cgroups"].values() for name in entry["limits"]}
    assert kinds >= LIMIT_KINDS, f"not set by the capture: {sorted(LIMIT_KINDS - kinds)}"


def test_limits_read_back_as_set(kernel_dir: Path, capture: dict[str, Any]) -> None:
    checked = 0
    for cgroup, entry in capture["cgroups"].items():
        for name, spec in entry["limits"].items():
            text = (kernel_dir / cgroup / name).read_text()
            if name == "io.max":
                # The spec names the disk by its guest path; the host resolves MAJ:MIN only.
                device = capture["disk"]["device"]
                spec_here = spec.replace(capture["disk"]["path"], device, 1)
                want = dict([parse_io_limit(spec_here)])
                assert io.parse_io_max(text, name) == want, (cgroup, name, spec)
            else:
                parse, from_spec = LIMIT_READBACK[name]
                assert parse(text, name) == from_spec(spec), (cgroup, name, text, spec)
            checked += 1
    assert checked >= len(LIMIT_KINDS)


# -- the same tree through CgroupFS and the read_* functions --------------------------------

READERS: list[tuple[str, Callable[[CgroupFS, str], Any]]] = [
    ("cpu.stat", cpu.read_cpu_stat),
    ("cpu.max", cpu.read_cpu_max),
    ("cpu.max.burst", cpu.read_cpu_max_burst),
    ("cpu.weight", cpu.read_cpu_weight),
    ("memory.current", memory.read_memory_current),
    ("memory.peak", memory.read_memory_peak),
    ("memory.swap.current", memory.read_memory_swap_current),
    ("memory.stat", memory.read_memory_stat),
    ("memory.events", memory.read_memory_events),
    ("memory.oom.group", memory.read_memory_oom_group),
    *[(n, lambda fs, cg, n=n: memory.read_memory_limit(fs, cg, n)) for n in memory.LIMIT_FILES],
    ("pids.current", pids.read_pids_current),
    ("pids.peak", pids.read_pids_peak),
    ("pids.max", pids.read_pids_max),
    ("pids.events", pids.read_pids_events),
    ("io.stat", io.read_io_stat),
    ("io.max", io.read_io_max),
    ("io.weight", io.read_io_weight),
    *[(n, lambda fs, cg, n=n: cpuset.read_cpuset(fs, cg, n)) for n in cpuset.FILES],
    ("cgroup.events", core.read_cgroup_events),
    ("cgroup.stat", core.read_cgroup_stat),
    *[
        (f"{r}.pressure", lambda fs, cg, r=r: pressure.read_pressure(fs, cg, r))
        for r in pressure.RESOURCES
    ],
]


def test_readers_over_the_captured_tree(captured_fs: CgroupFS) -> None:
    fs = captured_fs
    """Each read_* returns the parse of the file, or None where this cgroup lacks it."""
    present = absent = 0
    for cgroup in fs.walk():
        for name, reader in READERS:
            path = fs.path(cgroup) / name
            got = reader(fs, cgroup)
            if path.exists():
                assert got is not None and got == PARSERS[name](path.read_text(), name)
                present += 1
            else:
                assert got is None, (cgroup, name)
                absent += 1
        assert fs.procs(cgroup) == _pid_list(fs.read(cgroup, "cgroup.procs") or "", cgroup)
    assert present > 100 and absent > 0  # the root lacks the limit files
