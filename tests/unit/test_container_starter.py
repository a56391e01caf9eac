"""runtime.container.starter.fork_setup: the setup process forked straight into the
container's cgroup (clone3 CLONE_INTO_CGROUP, runtime.syscalls.fork_into_cgroup) on this
host's unified hierarchy, and plain fork(2) where that cannot be done."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from runtime import syscalls
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.mounts import find_cgroup2
from runtime.container.process import ProcessConfig
from runtime.container.starter import fork_setup

CONFIG = ProcessConfig(
    rootfs="/", argv=("true",), env=(), cwd="/", uid=0, gid=0, groups=(), hostname="h",
    volumes=(), read_only=False, network="none", caps=(), init=False, cgroup_dir="",
)  # fmt: skip


@pytest.fixture(name="cgroup")
def cgroup_fixture() -> Iterator[Path]:
    root = find_cgroup2("/proc/self/mountinfo")
    assert root is not None
    fs = CgroupFS(root)
    name = f"corral-unit-starter-{os.getpid()}"
    fs.create(name)
    yield Path(str(fs.path(name)))
    fs.remove(name, recursive=True)


def own_cgroup() -> str:
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    return next(line[3:] for line in lines if line.startswith("0::"))


def child_status(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_setup_process_is_born_in_the_cgroup(cgroup: Path) -> None:
    pid, config = fork_setup(replace(CONFIG, cgroup_dir=str(cgroup)))
    if pid == 0:  # report through the exit status: 0 when in the cgroup and told so
        ok = cgroup.as_posix().endswith(own_cgroup()) and config.born_in_cgroup
        os._exit(0 if ok else 1)
    assert config.born_in_cgroup
    assert child_status(pid) == 0
    assert own_cgroup() != "/" + cgroup.name  # the starter itself stays where it was


def test_a_child_of_the_setup_process_forks_normally(cgroup: Path) -> None:
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        pid = syscalls.fork_into_cgroup(fd)
        if pid == 0:  # glibc's fork from the raw clone3 child: PID 1's path
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(7 if cgroup.as_posix().endswith(own_cgroup()) else 1)
            os._exit(child_status(grandchild))
        assert child_status(pid) == 7
    finally:
        os.close(fd)


def test_without_the_cgroup_it_forks_and_leaves_the_join_to_the_setup(tmp_path: Path) -> None:
    pid, config = fork_setup(replace(CONFIG, cgroup_dir=str(tmp_path / "gone")))
    if pid == 0:
        os._exit(0 if not config.born_in_cgroup else 1)
    assert not config.born_in_cgroup and child_status(pid) == 0


def test_fork_into_cgroup_names_a_bad_descriptor() -> None:
    with pytest.raises(OSError, match="clone3") as e:
        syscalls.fork_into_cgroup(987654)
    assert e.value.errno == 9  # EBADF
