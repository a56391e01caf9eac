"""Shared fixtures for the unit tests: the captured cgroup v2 trees and the host's cgroup2.

tests/fixtures/cgroupfs/<kernel release>/ holds one capture per kernel (see its README.md and
tools/capture_fixtures.py). Tests that take ``kernel_dir`` run once per captured kernel; tests
that take ``captured_file`` run once per captured interface file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.core import read_cgroup_events
from runtime.cgroupfs.mounts import find_cgroup2

# `corral run` puts root's containers on the corral0 bridge by default. The tests that are not
# about networking run with --network none: on this host they must never touch the host's own
# network namespace (bridge, nft rules, ip_forward); the network tests ask for bridge
# explicitly, inside network namespaces they make (unit) or in the throwaway machine (kernel).
os.environ.setdefault("CORRAL_NETWORK", "none")


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroupfs"


@dataclass(frozen=True)
class CapturedFile:
    """One interface file as the kernel printed it during the capture."""

    kernel: str
    cgroup: str  # "" for the root
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def __str__(self) -> str:
        return f"{self.kernel}:{self.cgroup or '/'}:{self.name}"


def kernel_dirs() -> list[Path]:
    """The capture of each kernel: directories holding a CAPTURE.json."""
    if not FIXTURES.is_dir():
        return []
    return sorted(p for p in FIXTURES.iterdir() if (p / "CAPTURE.json").is_file())


def captured_files() -> list[CapturedFile]:
    out = []
    for kdir in kernel_dirs():
        for path in sorted(kdir.rglob("*")):
            if path.is_file() and path.name != "CAPTURE.json":
                cgroup = path.parent.relative_to(kdir).as_posix()
                cgroup = "" if cgroup == "." else cgroup
                out.append(CapturedFile(kdir.name, cgroup, path.name, path))
    return out


def load_capture(kernel_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((kernel_dir / "CAPTURE.json").read_text())
    return data


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # With no capture at all, parametrize with a path that does not exist so that every such
    # test fails loudly instead of being skipped for an empty parameter set.
    if "kernel_dir" in metafunc.fixturenames:
        dirs = kernel_dirs() or [FIXTURES / "no-capture-found"]
        metafunc.parametrize("kernel_dir", dirs, ids=[d.name for d in dirs])
    if "captured_file" in metafunc.fixturenames:
        files = captured_files() or [CapturedFile("none", "", "none", FIXTURES / "none")]
        metafunc.parametrize("captured_file", files, ids=[str(f) for f in files])


@pytest.fixture
def capture(kernel_dir: Path) -> dict[str, Any]:
    """CAPTURE.json of ``kernel_dir``: what ran in which cgroup and which limits were set."""
    return load_capture(kernel_dir)


@pytest.fixture(scope="session")
def all_captured_files() -> list[CapturedFile]:
    return captured_files()


@pytest.fixture
def host_cgroup2() -> Path:
    """The host's real cgroup2 mount; every development and CI machine has one."""
    mount = find_cgroup2("/proc/self/mountinfo")
    assert mount is not None, "no cgroup2 mount in /proc/self/mountinfo"
    return Path(mount)


# -- fake cgroup roots in temporary directories ------------------------------------------------

SEED = "capture/web"  # a captured cgroup with the files of every controller


@pytest.fixture
def fake_fs(tmp_path: Path) -> CgroupFS:
    """An empty temporary-directory root (no statfs check)."""
    root = tmp_path / "cgroup"
    root.mkdir()
    return CgroupFS(root, verify=False)


@pytest.fixture
def seeded(fake_fs: CgroupFS, all_captured_files: list[CapturedFile]) -> CgroupFS:
    """``fake_fs`` whose root holds the captured root's files and whose cgroup ``g`` holds a
    copy of the captured ``capture/web``: every file a writer may touch, as the kernel had it."""
    (fake_fs.root / "g").mkdir()
    for f in all_captured_files:
        if f.cgroup == SEED:
            shutil.copyfile(f.path, fake_fs.root / "g" / f.name)
        elif f.cgroup == "":
            shutil.copyfile(f.path, fake_fs.root / f.name)
    assert (fake_fs.root / "g" / "cpu.max").is_file(), "the capture lacks capture/web/cpu.max"
    return fake_fs


@pytest.fixture
def captured_fs(kernel_dir: Path, tmp_path: Path) -> CgroupFS:
    """The captured tree of ``kernel_dir`` as a CgroupFS root (a copy: the fixtures stay as
    captured whatever a test does)."""
    root = tmp_path / "captured"
    shutil.copytree(kernel_dir, root)
    return CgroupFS(root, verify=False)


Snapshot = Callable[[Path], dict[str, tuple[bytes, int]]]


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def snapshot() -> Snapshot:
    """Every file under a directory with its content and mtime, to show nothing changed."""
    return _snapshot


@pytest.fixture
def host(host_cgroup2: Path, request: pytest.FixtureRequest) -> Iterator[tuple[CgroupFS, str]]:
    """A fresh child of the host's cgroup2 root, killed and removed afterwards."""
    fs = CgroupFS(host_cgroup2)
    parent = f"corral-unit-{request.node.name[:40]}-{os.getpid()}"
    fs.create(parent)
    try:
        yield fs, parent
    finally:
        fs.kill(parent)
        deadline = time.monotonic() + 10
        while (events := read_cgroup_events(fs, parent)) and events.populated:
            assert time.monotonic() < deadline, f"{parent} did not empty after cgroup.kill"
            time.sleep(0.01)
        fs.remove(parent, recursive=True)
