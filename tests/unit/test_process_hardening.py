"""Process hardening before exec (runtime.security.process) on this host's real kernel: rlimits,
no_new_privs, closing fds, the parent-death signal and ``harden`` as a whole. Everything that
changes process state runs in a forked child (``in_child``) reporting through a pipe.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_capabilities import DOCKER_MASK, drop_own, in_child, status

from runtime.security import process
from runtime.security.capabilities import DOCKER_DEFAULT, User, docker_sets
from runtime.security.process import UNLIMITED, ParentDied, Rlimit, RlimitError

NOFILE = resource.RLIMIT_NOFILE


def limits_line(name: str) -> list[str]:
    """Soft and hard of one /proc/self/limits row ("Max open files")."""
    for line in Path("/proc/self/limits").read_text().splitlines():
        if line.startswith(name):
            return line[len(name) :].split()[:2]
    raise AssertionError(f"no {name!r} in /proc/self/limits")


def open_fds(upto: int = 1100) -> set[int]:
    found = set()
    for fd in range(3, upto):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.add(fd)
    return found


# -- rlimits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nofile", 1, 2), "unknown rlimit 'nofile': allowed are RLIMIT_AS, RLIMIT_CORE"),
        (("RLIMIT_FILES", 1, 2), "unknown rlimit 'RLIMIT_FILES'.*RLIMIT_NOFILE"),
        (("RLIMIT_NOFILE", 2048, 1024), "soft limit 2048 is above hard limit 1024"),
        (("RLIMIT_CORE", -1, 0), f"soft limit {UNLIMITED} is above hard limit 0"),
        (("RLIMIT_CORE", -2, 0), "RLIMIT_CORE soft -2: allowed 0..18446744073709551615 or -1"),
    ],
)
def test_bad_rlimits_are_refused_with_what_is_allowed(
    args: tuple[str, int, int], message: str
) -> None:
    with pytest.raises(RlimitError, match=message):
        Rlimit(*args)


def test_minus_one_means_unlimited() -> None:
    assert Rlimit("RLIMIT_CORE", -1, -1) == Rlimit("RLIMIT_CORE", UNLIMITED, UNLIMITED)


def test_rlimits_are_set_as_given() -> None:
    def child(_: int) -> tuple[object, ...]:
        process.set_rlimits(
            [("RLIMIT_NOFILE", 4096, 8192), ("RLIMIT_CORE", 0, 0), Rlimit("RLIMIT_CPU", -1, -1)]
        )
        cpu = resource.getrlimit(resource.RLIMIT_CPU)
        return resource.getrlimit(NOFILE), limits_line("Max open files"), cpu

    nofile, line, cpu = in_child(child)
    assert nofile == (4096, 8192) and line == ["4096", "8192"]
    assert cpu == (resource.RLIM_INFINITY, resource.RLIM_INFINITY)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ([("RLIMIT_NOFILE", 100, 200), ("RLIMIT_NOFILE", 1, 2)], "more than once"),
        ([("RLIMIT_CORE", 0, 0), ("RLIMIT_NOFILE", 1, -1)], "above /proc/sys/fs/nr_open"),
        ([("RLIMIT_CORE", 0, 0), ("RLIMIT_NOFLIE", 1, 1)], "unknown rlimit 'RLIMIT_NOFLIE'"),
    ],
)
def test_a_bad_rlimit_sets_none_of_them(limits: list[tuple[str, int, int]], message: str) -> None:
    def both() -> tuple[tuple[int, int], tuple[int, int]]:
        return resource.getrlimit(resource.RLIMIT_CORE), resource.getrlimit(NOFILE)

    def child(_: int) -> tuple[str, object, object]:
        before = both()
        try:
            process.set_rlimits(limits)
        except RlimitError as e:
            return str(e), before, both()
        return "no error", before, None

    error, before, after = in_child(child)
    assert message in error and before == after


def test_without_cap_sys_resource_the_default_stops_at_the_hard_limit() -> None:
    def child(_: int) -> tuple[str, Rlimit, tuple[int, int]]:
        drop_own("SYS_RESOURCE")
        resource.setrlimit(NOFILE, (1024, 8192))
        try:
            process.set_rlimits([("RLIMIT_NOFILE", 8192, 8193)])
            error = "no error"
        except RlimitError as e:
            error = str(e)
        default = process.default_nofile()
        process.set_rlimits([default])
        return error, default, resource.getrlimit(NOFILE)

    error, default, now = in_child(child)
    assert "hard limit 8193 is above the current 8192" in error and "CAP_SYS_RESOURCE" in error
    assert default == Rlimit("RLIMIT_NOFILE", 8192, 8192) and now == (8192, 8192)


@pytest.mark.parametrize(
    ("ceiling", "hard", "can_raise", "expected"),
    [
        (1048576, 1024, True, 1048576),  # docker's value
        (65536, 1024, True, 65536),  # clipped to nr_open
        (1 << 30, 1024, True, 1048576),
        (1048576, 20000, False, 20000),  # cannot raise the hard limit
        (1048576, UNLIMITED, False, 1048576),
    ],
)
def test_default_nofile(ceiling: int, hard: int, can_raise: bool, expected: int) -> None:
    got = process.default_nofile(ceiling=ceiling, hard=hard, can_raise=can_raise)
    assert got == Rlimit("RLIMIT_NOFILE", expected, expected)


def test_nr_open_is_the_kernels_ceiling() -> None:
    assert process.nr_open() == int(Path("/proc/sys/fs/nr_open").read_text())
    assert process.default_nofile().soft <= process.nr_open()


# -- no_new_privs ------------------------------------------------------------------------------


def test_no_new_privs_shows_in_status_and_is_inherited_across_execve() -> None:
    def child(_: int) -> tuple[bool, bool, str, str]:
        before = process.no_new_privs()
        process.set_no_new_privs()
        execd = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True)
        return before, process.no_new_privs(), status()["NoNewPrivs"], execd.stdout

    before, after, line, execd = in_child(child)
    assert (before, after, line) == (False, True, "1")
    assert "NoNewPrivs:\t1" in execd


# -- closing fds -------------------------------------------------------------------------------


def _spare_fds() -> tuple[int, int, int]:
    low = os.open("/dev/null", os.O_RDONLY)
    kept = os.open("/dev/null", os.O_RDONLY)
    high = os.dup2(low, 1000)
    os.set_inheritable(kept, True)  # its flags must be left exactly as they were
    return low, kept, high


@pytest.mark.parametrize("how", ["close_range", "listing"])
def test_every_fd_from_3_is_closed_but_the_keep_list(how: str) -> None:
    def child(report: int) -> tuple[set[int], set[int], set[int], bool]:
        _, kept, _ = _spare_fds()
        before = open_fds()
        if how == "close_range":
            process.close_fds([report, kept, 1])
        else:
            process._close_by_listing({report, kept}, cloexec=False)
        return before, open_fds(), {report, kept}, os.get_inheritable(kept)

    before, after, keep, inheritable = in_child(child)
    assert len(before) >= 4 and 1000 in before
    assert after == keep and inheritable  # the kept fd's flags are untouched


@pytest.mark.parametrize("how", ["close_range", "listing"])
def test_with_cloexec_fds_stay_open_but_close_on_exec(how: str) -> None:
    def child(report: int) -> tuple[set[int], dict[int, bool], int]:
        _, kept, _ = _spare_fds()
        before = open_fds()
        if how == "close_range":
            process.close_fds([report, kept], cloexec=True)
        else:
            process._close_by_listing({report, kept}, cloexec=True)
        flags = {fd: bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in open_fds()}
        return before, flags, kept

    before, flags, kept = in_child(child)
    assert set(flags) == before and 1000 in flags  # nothing closed
    assert {fd for fd, cloexec in flags.items() if not cloexec} == {kept}


def test_a_keep_list_fd_that_is_not_open_closes_nothing() -> None:
    def child(report: int) -> tuple[str, bool]:
        low, _, _ = _spare_fds()
        try:
            process.close_fds([report, 999])
        except ValueError as e:
            return str(e), low in open_fds()
        return "no error", False

    assert in_child(child) == ("fd 999 in the keep-list is not open", True)


# -- the parent-death signal --------------------------------------------------------------------


def test_a_uid_switch_clears_the_parent_death_signal() -> None:
    # why harden arms it again after the switch (kernel/cred.c commit_creds)
    def child(_: int) -> tuple[int, int]:
        process.set_parent_death_signal(signal.SIGUSR1)
        armed = process.parent_death_signal()
        os.setresuid(1000, 1000, 1000)
        return armed, process.parent_death_signal()

    assert in_child(child) == (signal.SIGUSR1, 0)


def _grandchild_reports(report: int, then_signal: bool) -> str:
    """The child forks B and exits once B is running; B sees its parent die."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    if os.fork() == 0:  # pragma: no cover - B
        os.close(read_fd)
        if then_signal:
            signal.signal(signal.SIGUSR1, lambda *_: (os.write(report, b"signalled"), os._exit(0)))
            process.set_parent_death_signal(signal.SIGUSR1, expected_ppid=parent)
            os.write(write_fd, b"armed")
            time.sleep(20)
            os._exit(1)
        os.write(write_fd, b"running")
        while os.getppid() == parent:
            time.sleep(0.005)
        try:
            process.set_parent_death_signal(signal.SIGKILL, expected_ppid=parent)
        except ParentDied as e:
            os.write(report, str(e).encode())
        os._exit(0)
    os.close(write_fd)
    os.read(read_fd, 16)
    os._exit(0)  # the child dies here: B is reparented, and reports through ``report``


def test_the_parent_death_signal_arrives_when_the_parent_dies() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        _grandchild_reports(write_fd, then_signal=True)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        assert pipe.read() == b"signalled"


def test_a_parent_that_died_before_the_signal_was_armed_is_detected() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        _grandchild_reports(write_fd, then_signal=False)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        assert pipe.read().decode().startswith(f"parent {pid} died: the process now has parent")


# -- harden: all of it, in order ----------------------------------------------------------------


def test_harden_as_uid_1000() -> None:
    def child(report: int) -> tuple[dict[str, str], set[int], object, int, int]:
        _spare_fds()
        process.harden(
            docker_sets(DOCKER_DEFAULT, 1000),
            User(1000, 1000),
            keep_fds=[report],
            rlimits=[("RLIMIT_NOFILE", 4096, 4096)],
            expected_ppid=os.getppid(),
        )
        fds = open_fds()
        return status(), fds, resource.getrlimit(NOFILE), process.parent_death_signal(), report

    report_status, fds, nofile, death, report = in_child(child)
    assert report_status["NoNewPrivs"] == "1" and report_status["Uid"].split() == ["1000"] * 4
    assert int(report_status["CapBnd"], 16) == DOCKER_MASK
    assert int(report_status["CapEff"], 16) == int(report_status["CapPrm"], 16) == 0
    assert fds == {report} and nofile == (4096, 4096) and death == signal.SIGKILL


def test_harden_as_root_sets_the_default_nofile() -> None:
    def child(report: int) -> tuple[Rlimit, object, dict[str, str]]:
        default = process.default_nofile()
        process.harden(docker_sets(DOCKER_DEFAULT, 0), User(), keep_fds=[report])
        return default, resource.getrlimit(NOFILE), status()

    default, nofile, report = in_child(child)
    assert nofile == (default.soft, default.hard)
    assert int(report["CapEff"], 16) == DOCKER_MASK and report["NoNewPrivs"] == "1"
