"""Fixtures for the kernel tests, which run inside `corral machine` against a real cgroup v2.

- a session guard that fails every test (never skips) away from a real cgroup2 root with cpu,
  memory, io and pids enabled at the root;
- ``cgroup``: a fresh child of ``corral-test/`` per test, killed and removed afterwards even
  when the test failed;
- ``spawn``: start a workload already inside a cgroup (see kernel_harness.Workload);
- ``scratch_disk``: the machine's raw virtio disk (CORRAL_MACHINE_DISK);
- ``figures``: what tolerance checks measured, printed in a section at the end of the run.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Sequence

import pytest
from kernel_harness import Figures, Spawn, Workload, populated, wait_until

from runtime.cgroupfs import CgroupFS, CgroupGone, NotCgroup2
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.limit_syntax import parse_device

# `corral run` puts root's containers on the corral0 bridge by default. The tests that are not
# about networking run with --network none: on this host they must never touch the host's own
# network namespace (bridge, nft rules, ip_forward); the network tests ask for bridge
# explicitly, inside network namespaces they make (unit) or in the throwaway machine (kernel).
os.environ.setdefault("CORRAL_NETWORK", "none")


REQUIRED = ("cpu", "memory", "io", "pids")
# What the per-test cgroups get from their parent; cpuset for the cpuset round trips.
TEST_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")
TEST_PARENT = "corral-test"
HOW = "run through `make kernel` / corral machine"

_FIGURES: list[tuple[str, str]] = []
_serial = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.kernel)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("kernel figures (observed vs expected)")
    for test, text in _FIGURES:
        terminalreporter.write_line(f"{test.rpartition('::')[2]}: {text}")


def _guard() -> CgroupFS:
    """A real cgroup2 root, root privileges, and the controllers the tests exercise."""
    try:
        fs = CgroupFS()
    except NotCgroup2 as e:
        pytest.fail(f"the kernel tests need a real cgroup v2 root: {e}; {HOW}", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(f"the kernel tests create cgroups and need root; {HOW}", pytrace=False)
    enabled = fs.subtree_control("")
    missing = [c for c in REQUIRED if c not in enabled]
    if missing:
        pytest.fail(
            f"{fs.root}/cgroup.subtree_control lacks {' '.join(missing)} "
            f"(enabled: {' '.join(sorted(enabled)) or 'none'}); {HOW}",
            pytrace=False,
        )
    return fs


def destroy(fs: CgroupFS, cgroup: str) -> None:
    """Kill everything in the subtree, wait until the kernel says it is empty, remove it."""
    if not fs.exists(cgroup):
        return
    try:
        fs.kill(cgroup)
        wait_until(lambda: not populated(fs, cgroup), 30, f"{cgroup} to empty after cgroup.kill")
    except CgroupGone:
        return
    fs.remove(cgroup, recursive=True)


@pytest.fixture(scope="session", autouse=True)
def kernel_root() -> Iterator[CgroupFS]:
    fs = _guard()
    destroy(fs, TEST_PARENT)  # left over from an interrupted run in the same boot
    fs.create(TEST_PARENT)
    wanted = [c for c in TEST_CONTROLLERS if c in fs.subtree_control("")]
    fs.enable_controllers(TEST_PARENT, wanted)
    yield fs
    destroy(fs, TEST_PARENT)


@pytest.fixture
def fs(kernel_root: CgroupFS) -> CgroupFS:
    return CgroupFS()


@pytest.fixture
def cgroup(fs: CgroupFS, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty cgroup ``corral-test/<test>-<n>`` with the test controllers available."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    path = f"{TEST_PARENT}/{name}-{next(_serial)}"
    fs.create(path)
    try:
        yield path
    finally:
        destroy(fs, path)


@pytest.fixture
def spawn(fs: CgroupFS, cgroup: str) -> Iterator[Spawn]:
    """``spawn(argv, where=cgroup)``: a Workload whose process runs inside ``where`` from the
    first instruction of ``argv``. Stopped and reaped before the cgroup is destroyed."""
    started: list[Workload] = []

    def start(argv: Sequence[str], where: str | None = None) -> Workload:
        workload = Workload(argv, fs, cgroup if where is None else where)
        started.append(workload)
        return workload

    yield start
    for workload in started:
        workload.stop()


@pytest.fixture(scope="session")
def scratch_disk() -> tuple[str, Device]:
    """The machine's raw scratch disk (``corral machine run --disk``) and its MAJ:MIN."""
    path = os.environ.get("CORRAL_MACHINE_DISK")
    if not path:
        pytest.fail(
            "CORRAL_MACHINE_DISK is not set: the io tests need the machine's scratch disk; "
            f"{HOW} with --disk (the Makefile passes --disk 512M)",
            pytrace=False,
        )
    return path, parse_device(path)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.nodeid, _FIGURES)
