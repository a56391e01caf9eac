"""ContainerCgroups on the host's real cgroup2 (hybrid: no controllers) and on the seeded fake
tree (the captured files of a cgroup with every controller, for update's checks and undo).

On this host a container still gets a cgroup, processes in it are killed by remove, and every
limit is refused naming its controller, with nothing created. The limits themselves are
enforced and read back in tests/kernel/test_container_cgroup.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.cgroupfs import CgroupFS, CgroupGone, InvalidLimit, InvalidPath, WriteRejected
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.io import Device
from runtime.cgroupfs.mounts import cgroup_layout, read_mountinfo
from runtime.container.cgroup import (
    CONTROLLERS,
    CgroupExists,
    ContainerCgroups,
    LimitUnavailable,
    signal_all,
)
from runtime.container.limits import ContainerLimits, IoLimit, parse_limits

MiB = 1 << 20
Snapshot = Callable[[Path], dict[str, tuple[bytes, int]]]


def wait_for(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


def start_tree(fs: CgroupFS, cgroup: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A shell with two background sleeps, all three inside ``cgroup`` from their start."""
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
        preexec_fn=lambda: fs.move(os.getpid(), cgroup),
    )
    wait_for(lambda: len(fs.procs(cgroup)) == 3, f"3 processes in {cgroup}")
    return proc, fs.procs(cgroup)


def dead(pid: int) -> bool:
    """No longer running: gone from /proc, or a zombie not yet reaped by its new parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.fixture
def cgroups(host: tuple[CgroupFS, str]) -> ContainerCgroups:
    """Containers under ``<host test cgroup>/corral``, a parent not made yet."""
    fs, base = host
    return ContainerCgroups(fs, parent=f"{base}/corral")


def test_a_container_without_limits_gets_a_cgroup_in_the_unified_hierarchy(
    cgroups: ContainerCgroups,
) -> None:
    fs = cgroups.fs
    assert not fs.exists(cgroups.parent)
    path = cgroups.create("web", ContainerLimits())
    assert path == f"{cgroups.parent}/web"
    # Made on first use, with the controllers the root enables for its children (none here).
    enabled = {c for c in CONTROLLERS if c in fs.subtree_control("")}
    assert fs.subtree_control(cgroups.parent) == enabled
    for name in ("cpu.stat", "cpu.pressure", "memory.pressure", "cgroup.kill", "cgroup.freeze"):
        assert (fs.path(path) / name).is_file(), f"{path} lacks {name}"
    assert cgroups.read_limits(path) == {}
    assert cgroups.oom_killed(path) is False

    cgroups.remove(path)
    assert not fs.exists(path)
    assert fs.children(cgroups.parent) == []
    assert fs.procs(cgroups.parent) == [], "the parent never holds processes"


@pytest.mark.parametrize("use_kill_file", [None, False], ids=["cgroup.kill", "sigkill-each-pid"])
def test_remove_kills_every_process_and_every_child_cgroup(
    cgroups: ContainerCgroups, use_kill_file: bool | None
) -> None:
    cgroups = ContainerCgroups(cgroups.fs, cgroups.parent, use_kill_file=use_kill_file)
    fs = cgroups.fs
    path = cgroups.create("busy", ContainerLimits())
    fs.create(f"{path}/inner/deeper")  # a container may make its own sub-cgroups
    shell, pids = start_tree(fs, path)
    inner, inner_pids = start_tree(fs, f"{path}/inner/deeper")

    cgroups.remove(path)
    assert shell.wait(10) == -9 and inner.wait(10) == -9
    assert all(dead(pid) for pid in pids + inner_pids)
    assert not fs.exists(path)
    assert fs.children(cgroups.parent) == []


def test_kill_leaves_the_cgroup_and_signal_all_counts(cgroups: ContainerCgroups) -> None:
    fs = cgroups.fs
    path = cgroups.create("k", ContainerLimits())
    shell, _ = start_tree(fs, path)
    cgroups.kill(path)
    assert shell.wait(10) == -9
    wait_for(lambda: fs.procs(path) == [], f"{path} to empty")
    assert fs.exists(path)
    assert signal_all(fs, path) == 0
    cgroups.remove(path)


def test_remove_is_idempotent(cgroups: ContainerCgroups) -> None:
    path = cgroups.create("once", ContainerLimits())
    cgroups.remove(path)
    cgroups.remove(path)
    cgroups.remove(f"{cgroups.parent}/never-made")
    cgroups.kill(path)  # gone: nothing to kill
    assert not cgroups.fs.exists(path)
    for root in ("", "/", "//"):
        with pytest.raises(InvalidPath, match="refusing to kill or remove the root cgroup"):
            cgroups.remove(root)
        with pytest.raises(InvalidPath, match="refusing to kill or remove the root cgroup"):
            ContainerCgroups(cgroups.fs, cgroups.parent, use_kill_file=False).kill(root)
        with pytest.raises(InvalidPath, match="refusing to kill or remove the root cgroup"):
            signal_all(cgroups.fs, root)


def test_an_existing_name_is_refused_and_left_alone(cgroups: ContainerCgroups) -> None:
    fs = cgroups.fs
    path = cgroups.create("dup", ContainerLimits())
    shell, pids = start_tree(fs, path)
    with pytest.raises(CgroupExists, match=rf"{fs.path(path)}: cgroup already exists"):
        cgroups.create("dup", ContainerLimits())
    assert fs.procs(path) == pids and shell.poll() is None
    cgroups.remove(path)
    assert shell.wait(10) == -9


@pytest.mark.parametrize("name", ["", "a/b", "..", ".x", "-x", "x y", "x" * 256, "é"])
def test_bad_names_are_refused_before_anything_is_made(
    cgroups: ContainerCgroups, name: str
) -> None:
    with pytest.raises(InvalidPath, match="container cgroup name"):
        cgroups.create(name, ContainerLimits())
    assert not cgroups.fs.exists(cgroups.parent)


# -- on this hybrid host every limit is refused, naming its controller ----------------------

DISK = Device(7, 0)  # never written: the refusal comes first
EACH_LIMIT = [
    ("--memory", "memory", ContainerLimits(memory=64 * MiB), "64M"),
    ("--memory-high", "memory", ContainerLimits(memory_high=64 * MiB), "64M"),
    ("--memory-swap", "memory", ContainerLimits(memory_swap=128 * MiB), "128M"),
    ("--cpus", "cpu", ContainerLimits(cpus=CpuMax(150_000)), "1.5"),
    ("--cpu-weight", "cpu", ContainerLimits(cpu_weight=500), "500"),
    ("--cpuset-cpus", "cpuset", ContainerLimits(cpuset_cpus="0"), "0"),
    ("--pids-limit", "pids", ContainerLimits(pids_limit=50), "50"),
    ("--device-read-bps", "io", ContainerLimits(io=(IoLimit(DISK, "rbps", 1, "/d"),)), "/d:1"),
    ("--device-write-iops", "io", ContainerLimits(io=(IoLimit(DISK, "wiops", 9, "/d"),)), "/d:9"),
]


@pytest.mark.parametrize(("option", "controller", "limits", "value"), EACH_LIMIT)
def test_each_limit_is_refused_naming_its_controller_with_nothing_created(
    cgroups: ContainerCgroups, option: str, controller: str, limits: ContainerLimits, value: str
) -> None:
    fs = cgroups.fs
    layout = cgroup_layout(read_mountinfo())
    assert controller not in fs.controllers(""), "these tests describe the hybrid host"
    v1 = layout.v1_mounts_of(controller)
    assert v1, f"{controller} is not bound to cgroup v1 on this host"

    for attempt in (lambda: cgroups.check(limits), lambda: cgroups.create("c", limits)):
        with pytest.raises(LimitUnavailable) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith(f"{option} {value}: cannot be enforced: the {controller} ")
        assert f"not in {fs.root}/cgroup.controllers: bound to cgroup v1 here" in message
        assert " and ".join(v1.values()) in message
        assert "`corral doctor`" in message
        assert (caught.value.option, caught.value.controller) == (option, controller)
    assert not fs.exists(cgroups.parent), "a refused limit must leave nothing behind"


def test_memory_64m_is_refused_as_the_cli_would_show_it(cgroups: ContainerCgroups) -> None:
    with pytest.raises(LimitUnavailable) as caught:
        cgroups.create("c", parse_limits(memory="64m"))
    assert str(caught.value) == (
        f"--memory 64M: cannot be enforced: the memory controller of cgroup v2 is unavailable "
        f"(not in {cgroups.root}/cgroup.controllers: bound to cgroup v1 here (at "
        "/sys/fs/cgroup/memory)); refused rather than ignored. `corral doctor` shows how to "
        "free the controller, or run corral in `corral machine`"
    )


def test_update_of_an_unavailable_limit_changes_nothing(cgroups: ContainerCgroups) -> None:
    path = cgroups.create("u", ContainerLimits())
    before = sorted(os.listdir(cgroups.fs.path(path)))
    with pytest.raises(LimitUnavailable, match=r"--pids-limit 9: .* the pids controller"):
        cgroups.update(path, ContainerLimits(pids_limit=9))
    cgroups.update(path, ContainerLimits())  # nothing asked: nothing to do
    assert sorted(os.listdir(cgroups.fs.path(path))) == before
    cgroups.remove(path)
    with pytest.raises(CgroupGone):
        cgroups.update(path, ContainerLimits())


def test_200_create_remove_cycles_leave_no_cgroup_and_no_fd(cgroups: ContainerCgroups) -> None:
    fs = cgroups.fs
    cgroups.remove(cgroups.create("warm", ContainerLimits()))  # first use makes the parent
    fds = sorted(os.listdir("/proc/self/fd"))
    for n in range(200):
        path = cgroups.create(f"c{n}", ContainerLimits())
        if n % 20 == 0:  # every twentieth with a process tree to kill
            shell, _ = start_tree(fs, path)
            cgroups.remove(path)
            assert shell.wait(10) == -9
        else:
            cgroups.remove(path)
    assert fs.children(cgroups.parent) == []
    assert sorted(os.listdir("/proc/self/fd")) == fds


# -- update's checks and undo, on the captured files of a cgroup with every controller ------


@pytest.fixture
def block() -> tuple[str, Device]:
    entries = sorted(os.listdir("/sys/dev/block"))
    assert entries, "this host has no block device in /sys/dev/block"
    return "/dev/disk", Device.parse(entries[0])


def text(fs: CgroupFS, name: str) -> str:
    return (fs.root / "g" / name).read_text().strip()


def test_update_writes_only_the_limits_given(
    seeded: CgroupFS, snapshot: Snapshot, block: tuple[str, Device]
) -> None:
    disk, device = block
    before = snapshot(seeded.root)
    limits = ContainerLimits(
        memory=64 * MiB,
        memory_swap=96 * MiB,
        cpus=CpuMax(50_000),
        pids_limit=200,  # as long as "max": a plain file is not truncated by the write
        io=(IoLimit(device, "wbps", 2 * MiB, disk), IoLimit(device, "riops", 7, disk)),
    )
    ContainerCgroups(seeded, "g").update("g", limits)
    after = snapshot(seeded.root)
    changed = {name for name in after if after[name] != before[name]}
    written = ("memory.max", "memory.swap.max", "cpu.max", "pids.max", "io.max")
    assert changed == {f"g/{name}" for name in written}
    assert text(seeded, "memory.max") == str(64 * MiB)
    assert text(seeded, "memory.swap.max") == str(32 * MiB)  # docker's total minus memory
    assert text(seeded, "cpu.max") == "50000 100000"
    assert text(seeded, "pids.max") == "200"
    # io.max is a plain file here: the last line written is the device's one line, with only
    # the keys given (the kernel keeps the others).
    assert text(seeded, "io.max") == f"{device} wbps={2 * MiB} riops=7"


def test_update_of_swap_alone_uses_the_cgroups_memory_max(
    seeded: CgroupFS, snapshot: Snapshot
) -> None:
    cgroups = ContainerCgroups(seeded, "g")
    before = snapshot(seeded.root)
    with pytest.raises(InvalidLimit, match=r"--memory-swap: .*has no memory limit: give --memory"):
        cgroups.update("g", ContainerLimits(memory_swap=96 * MiB))
    assert snapshot(seeded.root) == before
    (seeded.root / "g" / "memory.max").write_text(f"{64 * MiB}\n")
    with pytest.raises(InvalidLimit, match="at least the memory limit"):
        cgroups.update("g", ContainerLimits(memory_swap=32 * MiB))
    cgroups.update("g", ContainerLimits(memory_swap=100 * MiB))
    assert text(seeded, "memory.swap.max") == str(36 * MiB)


def test_update_checks_cpuset_against_the_parents_effective_cpus(
    seeded: CgroupFS, snapshot: Snapshot
) -> None:
    before = snapshot(seeded.root)
    with pytest.raises(InvalidLimit, match=r"--cpuset-cpus: invalid value '0-3': CPUs within .*"):
        ContainerCgroups(seeded, "g").update("g", ContainerLimits(cpuset_cpus="0-3", pids_limit=1))
    assert snapshot(seeded.root) == before
    ContainerCgroups(seeded, "g").update("g", ContainerLimits(cpuset_cpus="1"))
    assert text(seeded, "cpuset.cpus") == "1"


def test_a_write_the_kernel_refuses_puts_back_the_earlier_ones(seeded: CgroupFS) -> None:
    # memory.high is written last; /proc/version opens for writing but fails with EIO.
    high = seeded.root / "g" / "memory.high"
    high.unlink()
    high.symlink_to("/proc/version")
    # Plain files are not truncated by a write as kernel files are replaced: old values at
    # least as long as the new ones make a restored file read exactly as before.
    old = {"memory.max": "99999999999", "pids.max": "4194304", "cpu.weight": "200"}
    for name, value in old.items():
        (seeded.root / "g" / name).write_text(value)
    limits = ContainerLimits(memory=64 * MiB, pids_limit=20, cpu_weight=7, memory_high=32 * MiB)
    with pytest.raises(WriteRejected, match=r"memory\.high: kernel refused '33554432'"):
        ContainerCgroups(seeded, "g").update("g", limits)
    assert {name: text(seeded, name) for name in old} == old


def test_a_missing_limit_file_is_refused_before_any_write(
    seeded: CgroupFS, snapshot: Snapshot
) -> None:
    (seeded.root / "g" / "memory.swap.max").unlink()  # a kernel without swap accounting
    before = snapshot(seeded.root)
    limits = ContainerLimits(memory=6 * MiB, memory_swap=6 * MiB)
    with pytest.raises(LimitUnavailable, match=r"--memory-swap 6M: .*memory.swap.max does not"):
        ContainerCgroups(seeded, "g").update("g", limits)
    assert snapshot(seeded.root) == before


def test_create_removes_the_new_cgroup_when_a_limit_cannot_be_written(seeded: CgroupFS) -> None:
    # A plain directory has no interface files: the first limit file is missing.
    (seeded.root / "g" / "cgroup.procs").write_text("")  # the parent holds no process
    with pytest.raises(LimitUnavailable, match=r"pids\.max does not exist"):
        ContainerCgroups(seeded, "g").create("c1", ContainerLimits(pids_limit=5))
    assert not (seeded.root / "g" / "c1").exists()


def test_read_limits_and_oom_killed_read_the_files(seeded: CgroupFS) -> None:
    cgroups = ContainerCgroups(seeded, "g")
    assert cgroups.read_limits("g") == {
        "cpuset.cpus": "",
        "cpu.weight": 200,
        "cpu.max": "20000 100000",
        "pids.max": "max",
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.high": "max",
        "io.max": {},
    }
    assert cgroups.oom_killed("g") is False
    events = seeded.root / "g" / "memory.events"
    events.write_text(events.read_text().replace("oom_kill 0", "oom_kill 1"))
    assert cgroups.oom_killed("g") is True
