"""CgroupFS over a temporary-directory root (verify=False): paths, gone vs absent, missing
files and controllers, and the cgroup2 check. The writers are in test_cgroupfs_writers.py.

The fake cgroups are seeded from the captured kernel trees (conftest ``seeded``). What needs
the real kernel (a write the kernel rejects, controllers really moving processes) is tested
in tests/kernel; churn on the host's real cgroup2 in test_cgroupfs_churn.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import syscalls
from runtime.cgroupfs import (
    CgroupError,
    CgroupFS,
    CgroupGone,
    ControllerUnavailable,
    InvalidPath,
    NotCgroup2,
    core,
    cpu,
    memory,
    normalize,
    pids,
)

Snapshot = Callable[[Path], dict[str, tuple[bytes, int]]]  # the conftest fixture


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("", ""),
        ("/", ""),
        ("a", "a"),
        ("/a//b/", "a/b"),
        ("corral/web", "corral/web"),
        ("odd name #1 (a+b)", "odd name #1 (a+b)"),
        ("..a/a..", "..a/a.."),
        (".hidden", ".hidden"),
    ],
)
def test_normalize(given: str, normal: str) -> None:
    assert normalize(given) == normal


@pytest.mark.parametrize(
    ("given", "allowed"),
    [
        ("..", "below the cgroup root like 'corral/web'"),
        ("../etc", "below the cgroup root like 'corral/web'"),
        ("a/../../b", "below the cgroup root like 'corral/web'"),
        ("/..", "below the cgroup root like 'corral/web'"),
        (".", "below the cgroup root like 'corral/web'"),
        ("a/./b", "below the cgroup root like 'corral/web'"),
        ("a\0b", "NUL"),
    ],
)
def test_escaping_paths_are_refused(
    seeded: CgroupFS, snapshot: Snapshot, given: str, allowed: str
) -> None:
    before = snapshot(seeded.root.parent)
    for attempt in (
        lambda: normalize(given),
        lambda: seeded.path(given),
        lambda: seeded.read(given, "cpu.stat"),
        lambda: seeded.write(given, "cpu.weight", "1"),
        lambda: seeded.create(given),
        lambda: seeded.remove(given),
        lambda: list(seeded.walk(given)),
    ):
        with pytest.raises(InvalidPath) as caught:
            attempt()
        assert repr(given) in str(caught.value) and allowed in str(caught.value)
    assert snapshot(seeded.root.parent) == before


@pytest.mark.parametrize("name", ["../cpu.max", "a/b", "", ".", ".."])
def test_interface_file_names_are_plain(seeded: CgroupFS, name: str) -> None:
    with pytest.raises(InvalidPath, match=r"expected a name like 'cpu\.max'"):
        seeded.read("g", name)
    with pytest.raises(InvalidPath, match=r"expected a name like 'cpu\.max'"):
        seeded.write("g", name, "1")


def test_a_symlink_cannot_lead_out_of_the_root(seeded: CgroupFS, tmp_path: Path) -> None:
    """cgroupfs has no symlinks, but a temp-dir root can: ``path`` must still stay inside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cpu.weight").write_text("100\n")
    (seeded.root / "g" / "link").symlink_to(outside)
    with pytest.raises(InvalidPath):
        seeded.read("g/link", "cpu.weight")
    with pytest.raises(InvalidPath):
        seeded.write("g/link", "cpu.weight", "9")
    assert (outside / "cpu.weight").read_text() == "100\n"


def test_root_is_never_created_removed_or_killed(seeded: CgroupFS, snapshot: Snapshot) -> None:
    before = snapshot(seeded.root)
    for attempt in (
        lambda: seeded.create(""),
        lambda: seeded.remove("/"),
        lambda: seeded.kill(""),
    ):
        with pytest.raises(InvalidPath, match="root cgroup"):
            attempt()
    assert snapshot(seeded.root) == before and seeded.root.is_dir()


def test_create_walk_and_remove(fake_fs: CgroupFS) -> None:
    fs = fake_fs
    assert fs.create("a/b c/d") is True
    assert fs.create("a/b c/d", exist_ok=True) is False
    with pytest.raises(CgroupError, match="already exists"):
        fs.create("a/b c/d")
    fs.create("a/e")
    assert list(fs.walk()) == ["", "a", "a/b c", "a/b c/d", "a/e"]
    assert list(fs.walk("a", max_depth=1)) == ["a", "a/b c", "a/e"]
    assert fs.children("a") == ["b c", "e"]
    fs.remove("a", recursive=True)
    assert not fs.exists("a") and list(fs.walk()) == [""]
    fs.remove("a")  # gone already is fine


# -- gone vs absent -------------------------------------------------------------------------------


def test_missing_file_in_existing_cgroup_is_none(seeded: CgroupFS) -> None:
    os.unlink(seeded.root / "g" / "memory.peak")
    assert seeded.read("g", "memory.peak") is None
    assert memory.read_memory_peak(seeded, "g") is None
    assert seeded.read("", "memory.max") is None  # the root has no memory.max
    assert memory.read_memory_limit(seeded, "", "memory.max") is None
    assert cpu.read_cpu_stat(seeded, "g") is not None


def test_removed_cgroup_is_gone(seeded: CgroupFS) -> None:
    shutil.rmtree(seeded.root / "g")
    readers: list[Callable[[], Any]] = [
        lambda: seeded.read("g", "cpu.stat"),
        lambda: cpu.read_cpu_stat(seeded, "g"),
        lambda: core.read_cgroup_events(seeded, "g"),
        lambda: seeded.read("g/child", "cpu.stat"),
        lambda: seeded.procs("g"),
        lambda: seeded.write("g", "cpu.weight", "100"),
        lambda: pids.write_pids_max(seeded, "g", 10),
    ]
    for attempt in readers:
        with pytest.raises(CgroupGone) as caught:
            attempt()
        assert caught.value.cgroup in ("g", "g/child") and "is gone" in str(caught.value)
    assert seeded.children("g") == [] and list(seeded.walk("g")) == []
    assert not seeded.exists("g")


def test_writing_a_file_of_a_controller_not_enabled(seeded: CgroupFS, snapshot: Snapshot) -> None:
    """A controller's files appear once the parent enables it: the error says which one."""
    (seeded.root / "cgroup.subtree_control").write_text("memory pids\n")
    (seeded.root / "g" / "cgroup.controllers").write_text("memory pids\n")
    for name in ("cpu.max", "cpu.weight", "cpu.max.burst"):
        os.unlink(seeded.root / "g" / name)
    before = snapshot(seeded.root)
    with pytest.raises(ControllerUnavailable) as caught:
        cpu.write_cpu_max_burst(seeded, "g", 1000)
    assert caught.value.cgroup == "g" and caught.value.controllers == ["cpu"]
    message = str(caught.value)
    assert "cpu.max.burst is missing" in message and "offers: memory pids" in message
    assert "subtree_control enables: memory pids" in message
    assert snapshot(seeded.root) == before  # nothing created


def test_writing_a_file_this_kernel_lacks(seeded: CgroupFS) -> None:
    """cpu is offered and enabled, but this kernel has no cpu.max.burst (before 5.14): the
    error names the file, and must not claim the cpu controller is unavailable."""
    assert "cpu" in seeded.controllers("g") and "cpu" in seeded.subtree_control("")
    os.unlink(seeded.root / "g" / "cpu.max.burst")
    with pytest.raises(CgroupError) as caught:
        cpu.write_cpu_max_burst(seeded, "g", 1000)
    assert not isinstance(caught.value, CgroupGone | ControllerUnavailable), caught.value
    assert str(seeded.root / "g" / "cpu.max.burst") in str(caught.value)
    assert not (seeded.root / "g" / "cpu.max.burst").exists()  # never created


def test_writing_a_core_file_this_kernel_lacks(seeded: CgroupFS) -> None:
    os.unlink(seeded.root / "g" / "cgroup.freeze")
    with pytest.raises(CgroupError, match="this kernel has no such file") as caught:
        seeded.freeze("g")
    assert not isinstance(caught.value, CgroupGone | ControllerUnavailable)
    assert str(seeded.root / "g" / "cgroup.freeze") in str(caught.value)


def test_other_read_errors_name_the_path(seeded: CgroupFS) -> None:
    (seeded.root / "g" / "sub").mkdir()
    with pytest.raises(CgroupError) as caught:
        seeded.read("g", "sub")
    assert not isinstance(caught.value, CgroupGone)
    assert str(seeded.root / "g" / "sub") in str(caught.value)


# -- controllers and the cgroup2 check -----------------------------------------------------------


def test_unavailable_controller_is_named_and_changes_nothing(
    seeded: CgroupFS, snapshot: Snapshot
) -> None:
    before = snapshot(seeded.root)
    offered = seeded.controllers("g")
    assert offered == {"cpuset", "cpu", "io", "memory", "pids"}
    with pytest.raises(ControllerUnavailable) as caught:
        seeded.enable_controllers("g", ["cpu", "rdma", "nonesuch"])
    message = str(caught.value)
    assert caught.value.cgroup == "g" and caught.value.controllers == ["rdma", "nonesuch"]
    assert message.startswith("cgroup g: controller(s) rdma nonesuch not available")
    assert "offers: cpu cpuset io memory pids" in message
    assert snapshot(seeded.root) == before and not seeded.exists("g/supervisor")


def test_unavailable_controller_when_none_is_offered(fake_fs: CgroupFS) -> None:
    fs = fake_fs
    fs.create("bare")
    with pytest.raises(ControllerUnavailable, match=r"bare: controller\(s\) memory .*offers: none"):
        fs.enable_controllers("bare", ["memory"])


def test_not_cgroup2_names_the_path_and_magic(tmp_path: Path) -> None:
    magic = syscalls.statfs_type(tmp_path)
    with pytest.raises(NotCgroup2) as caught:
        CgroupFS(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and f"statfs type {magic:#x}" in message
    assert f"expected {syscalls.CGROUP2_SUPER_MAGIC:#x}" in message
    with pytest.raises(NotCgroup2, match="no such directory"):
        CgroupFS(tmp_path / "missing")
    assert CgroupFS(tmp_path, verify=False).root == tmp_path


def test_the_hosts_cgroup2_passes_the_check(host_cgroup2: Path) -> None:
    fs = CgroupFS(host_cgroup2)
    assert "" in list(fs.walk(max_depth=0))
    assert cpu.read_cpu_stat(fs, "") is not None
