"""Capabilities of a container's process: docker's naming and --cap-add/--cap-drop rules, the
five sets, and applying them with the user switch on this host's real kernel.

Every test that changes process state runs in a forked child (``in_child``) that reports
through a pipe; the pytest process keeps its capabilities and ids.
"""

from __future__ import annotations

import errno
import os
import pickle
import select
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from runtime import syscalls
from runtime.security import capabilities as caps
from runtime.security.capabilities import (
    CAPABILITIES,
    DOCKER_DEFAULT,
    CapabilityError,
    CapabilitySets,
    User,
)

T = TypeVar("T")
EVERY = frozenset(CAPABILITIES)
DOCKER_MASK = 0xA80425FB  # CapEff of a root process in a default docker container


def in_child(fn: Callable[[int], T], timeout: float = 30.0) -> T:
    """``fn(report_fd)`` in a forked child: its result, or its exception raised here.
    ``report_fd`` is the pipe the result goes back through (keep it open)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            try:
                payload = pickle.dumps((True, fn(write_fd)))
            except BaseException as e:
                try:
                    payload = pickle.dumps((False, e))
                except Exception:
                    payload = pickle.dumps((False, RuntimeError(repr(e))))
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view) :]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    waiter = select.poll()  # not select(): the fd may be above FD_SETSIZE in a long run
    waiter.register(read_fd, select.POLLIN)
    try:
        while waiter.poll(timeout * 1000):
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    assert chunks, f"the child reported nothing within {timeout}s"
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def status() -> dict[str, str]:
    """The lines of /proc/self/status, by key."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def drop_own(*names: str) -> None:
    """Remove capabilities from this process's effective and permitted sets (a child's)."""
    eff, prm, inh = syscalls.capget()
    mask = caps.to_mask(f"CAP_{n}" for n in names)
    syscalls.capset(eff & ~mask, prm & ~mask, inh & ~mask)


# -- names and docker's rules ------------------------------------------------------------------


def test_the_table_numbers_every_capability_the_running_kernel_knows() -> None:
    assert caps.kernel_last_cap() < len(CAPABILITIES)
    assert [caps.CAP_NUMBER[n] for n in ("CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_MKNOD")] == [0, 21, 27]
    assert caps.CAP_NUMBER["CAP_CHECKPOINT_RESTORE"] == 40
    assert caps.to_mask(DOCKER_DEFAULT) == DOCKER_MASK
    assert caps.from_mask(DOCKER_MASK) == DOCKER_DEFAULT


@pytest.mark.parametrize("spelling", ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "Cap_Net_Admin"])
def test_names_are_spelled_as_docker_accepts_them(spelling: str) -> None:
    assert caps.normalize(spelling) == "CAP_NET_ADMIN"
    assert caps.normalize("all") == "ALL"


def test_an_unknown_name_is_refused_naming_it_and_the_allowed_ones() -> None:
    with pytest.raises(CapabilityError) as err:
        caps.effective_set(["NET_ADMN"], available=EVERY, last_cap=40)
    assert "unknown capability 'NET_ADMN'" in str(err.value)
    assert "allowed are ALL and CHOWN" in str(err.value) and "NET_ADMIN" in str(err.value)
    with pytest.raises(CapabilityError, match="'CAP_ALL'"):
        caps.effective_set([], ["CAP_ALL"], available=EVERY, last_cap=40)


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        ([], [], DOCKER_DEFAULT),
        (["net_admin"], [], DOCKER_DEFAULT | {"CAP_NET_ADMIN"}),
        ([], ["NET_RAW", "cap_chown"], DOCKER_DEFAULT - {"CAP_NET_RAW", "CAP_CHOWN"}),
        (["NET_BIND_SERVICE"], ["ALL"], {"CAP_NET_BIND_SERVICE"}),
        ([], ["all"], frozenset()),
        (["ALL"], ["SYS_ADMIN"], EVERY - {"CAP_SYS_ADMIN"}),
        (["ALL"], ["ALL"], EVERY),  # moby: add ALL is checked first and wins
        (["KILL"], ["KILL"], DOCKER_DEFAULT),  # moby drops from the default, then adds
        (["SYS_PTRACE"], ["KILL"], DOCKER_DEFAULT - {"CAP_KILL"} | {"CAP_SYS_PTRACE"}),
    ],
)
def test_effective_set_follows_moby_tweak_capabilities(
    add: list[str], drop: list[str], expected: frozenset[str]
) -> None:
    assert caps.effective_set(add, drop, available=EVERY, last_cap=40) == expected


def test_capabilities_beyond_the_running_kernel_are_refused() -> None:
    with pytest.raises(CapabilityError) as err:
        caps.effective_set(["checkpoint_restore"], available=EVERY, last_cap=39)
    assert "CAP_CHECKPOINT_RESTORE (40) is not supported by the running kernel" in str(err.value)
    assert "cap_last_cap is 39" in str(err.value)
    assert caps.effective_set(["ALL"], available=EVERY, last_cap=39) == EVERY - {
        "CAP_CHECKPOINT_RESTORE"
    }


def test_capabilities_this_environment_lacks_cannot_be_added_but_can_be_dropped() -> None:
    lacking = EVERY - {"CAP_SYS_RESOURCE"}
    with pytest.raises(CapabilityError, match="CAP_SYS_RESOURCE is not available"):
        caps.effective_set(["SYS_RESOURCE"], available=lacking, last_cap=40)
    assert caps.effective_set(["ALL"], available=lacking, last_cap=40) == lacking
    assert caps.effective_set([], ["SYS_RESOURCE"], available=lacking) == DOCKER_DEFAULT


def test_availability_defaults_to_this_processes_effective_set() -> None:
    def child(_: int) -> tuple[frozenset[str], str]:
        drop_own("NET_ADMIN")
        try:
            caps.effective_set(["NET_ADMIN"])
        except CapabilityError as e:
            return caps.effective_set(["ALL"]), str(e)
        return frozenset(), "no error"

    everything, error = in_child(child)
    assert "CAP_NET_ADMIN is not available in this environment" in error
    assert "CAP_NET_ADMIN" not in everything and "CAP_SYS_ADMIN" in everything


# -- the five sets -----------------------------------------------------------------------------


def test_docker_gives_root_bounding_effective_permitted_and_others_only_bounding() -> None:
    root = caps.docker_sets(DOCKER_DEFAULT, 0)
    assert root.masks() == {
        "CapInh": 0, "CapPrm": DOCKER_MASK, "CapEff": DOCKER_MASK, "CapBnd": DOCKER_MASK,
        "CapAmb": 0,
    }  # fmt: skip
    assert caps.docker_sets(DOCKER_DEFAULT, 1000) == CapabilitySets(bounding=DOCKER_DEFAULT)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"effective": {"CAP_KILL"}}, r"effective capabilities \['CAP_KILL'\] are not in the per"),
        ({"bounding": {"CAP_NOPE"}}, r"bounding: unknown capabilities \['CAP_NOPE'\]"),
        ({"inheritable": {"CAP_KILL"}}, "not in the bounding set"),
        (
            {"bounding": {"CAP_KILL"}, "permitted": {"CAP_KILL"}, "ambient": {"CAP_KILL"}},
            "ambient capabilities .* not in the inheritable set",
        ),
    ],
)
def test_sets_the_kernel_would_refuse_are_refused(sets: dict[str, set[str]], message: str) -> None:
    with pytest.raises(CapabilityError, match=message):
        CapabilitySets(**{k: frozenset(v) for k, v in sets.items()})


def test_oci_capabilities_are_taken_verbatim_and_unknown_names_left_out() -> None:
    config = {
        "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_FOO", "CAP_CHECKPOINT_RESTORE"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE", "CAP_FOO"],
    }
    sets, ignored = caps.from_oci(config, last_cap=39)
    assert ignored == ("CAP_FOO", "CAP_CHECKPOINT_RESTORE")
    assert sets.bounding == {"CAP_KILL", "CAP_NET_BIND_SERVICE"}
    assert sets.ambient == {"CAP_NET_BIND_SERVICE"} and sets.effective == {"CAP_KILL"}
    assert caps.from_oci(None) == (CapabilitySets(), ())
    with pytest.raises(CapabilityError, match=r"unknown keys \['bounds'\]"):
        caps.from_oci({"bounds": []})
    with pytest.raises(CapabilityError, match=r"capabilities\.effective: 'CAP_KILL' is not"):
        caps.from_oci({"effective": "CAP_KILL"})


@pytest.mark.parametrize(
    ("spec", "user"), [("1000", User(1000, 0)), ("1000:100", User(1000, 100)), ("0", User())]
)
def test_user_specs(spec: str, user: User) -> None:
    assert caps.parse_user(spec) == user


@pytest.mark.parametrize("spec", ["nobody", "1000:", ":1", "1000:users", "-1", "4294967295"])
def test_bad_user_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"expected UID|out of range"):
        caps.parse_user(spec)


# -- applied on this host's kernel -------------------------------------------------------------


def apply_and_report(sets: CapabilitySets, user: User) -> Callable[[int], dict[str, str]]:
    def child(_: int) -> dict[str, str]:
        caps.apply(sets, user)
        return status()

    return child


def masks(report: dict[str, str]) -> dict[str, int]:
    return {k: int(report[k], 16) for k in caps.STATUS_KEYS}


def test_docker_default_as_root_leaves_exactly_the_default_masks() -> None:
    report = in_child(apply_and_report(caps.docker_sets(DOCKER_DEFAULT, 0), User()))
    assert masks(report) == {
        "CapInh": 0, "CapPrm": DOCKER_MASK, "CapEff": DOCKER_MASK, "CapBnd": DOCKER_MASK,
        "CapAmb": 0,
    }  # fmt: skip
    assert report["Uid"].split() == ["0"] * 4 and report["Groups"] == ""


def test_docker_default_as_uid_1000_keeps_only_the_bounding_set() -> None:
    user = User(1000, 1000, (44, 1000))
    report = in_child(apply_and_report(caps.docker_sets(DOCKER_DEFAULT, 1000), user))
    assert masks(report) == {
        "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DOCKER_MASK, "CapAmb": 0,
    }  # fmt: skip
    assert report["Uid"].split() == ["1000"] * 4 and report["Gid"].split() == ["1000"] * 4
    assert report["Groups"].split() == ["44", "1000"]


def test_ambient_capabilities_reach_a_non_root_program_through_execve() -> None:
    sets, _ = caps.from_oci(
        {
            key: ["CAP_NET_BIND_SERVICE"]
            for key in ("bounding", "effective", "permitted", "inheritable", "ambient")
        }
    )

    def child(_: int) -> tuple[dict[str, str], str]:
        caps.apply(sets, User(1000, 1000))
        out = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True)
        return status(), out.stdout

    mine, execd = in_child(child)
    bit = f"{1 << 10:016x}"
    assert mine["CapAmb"] == bit and mine["CapEff"] == bit
    # across execve a non-root program's effective set is its ambient set (capabilities(7))
    assert "CapEff:\t" + bit in execd and "CapAmb:\t" + bit in execd
    assert "CapBnd:\t" + bit in execd


def test_cap_add_all_as_root_keeps_everything_this_process_had() -> None:
    def child(_: int) -> tuple[int, dict[str, str]]:
        drop_own("SYS_TIME")  # so that ALL is visibly "what is available", not "every bit"
        everything = caps.effective_set(["ALL"])
        caps.apply(caps.docker_sets(everything, 0), User())
        return caps.to_mask(everything), status()

    expected, report = in_child(child)
    assert not expected >> caps.CAP_NUMBER["CAP_SYS_TIME"] & 1
    assert masks(report)["CapEff"] == masks(report)["CapPrm"] == masks(report)["CapBnd"]
    assert masks(report)["CapEff"] == expected


def test_a_set_this_process_does_not_hold_is_refused_and_nothing_changes() -> None:
    wanted = CapabilitySets(*(frozenset({"CAP_NET_ADMIN"}),) * 3)

    def child(_: int) -> tuple[str, dict[str, str], dict[str, str]]:
        drop_own("NET_ADMIN")
        before = status()
        try:
            caps.apply(wanted, User(1000, 1000))
        except CapabilityError as e:
            return str(e), before, status()
        return "no error", before, status()

    error, before, after = in_child(child)
    assert "permitted capabilities ['CAP_NET_ADMIN'] cannot be granted" in error
    assert {k: after[k] for k in (*caps.STATUS_KEYS, "Uid")} == {
        k: before[k] for k in (*caps.STATUS_KEYS, "Uid")
    }


# -- a dropped capability is really unusable -----------------------------------------------------


def _mount_tmpfs(directory: Path) -> None:
    syscalls.mount("tmpfs", str(directory), "tmpfs")


def _raw_socket(_: Path) -> None:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()


def _mknod_char_device(directory: Path) -> None:
    os.mknod(directory / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))


def _chown_to_another_uid(directory: Path) -> None:
    (directory / "file").touch()
    os.chown(directory / "file", 4242, 4242)


PROBES: list[tuple[str, Callable[[Path], None]]] = [
    ("CAP_SYS_ADMIN", _mount_tmpfs),
    ("CAP_NET_RAW", _raw_socket),
    ("CAP_MKNOD", _mknod_char_device),
    ("CAP_CHOWN", _chown_to_another_uid),
]


@pytest.mark.parametrize(("cap", "probe"), PROBES, ids=[cap for cap, _ in PROBES])
@pytest.mark.parametrize("held", [True, False], ids=["held", "dropped"])
def test_a_dropped_capability_is_unusable_and_a_held_one_works(
    cap: str, probe: Callable[[Path], None], held: bool, tmp_path: Path
) -> None:
    chosen = DOCKER_DEFAULT | {cap} if held else DOCKER_DEFAULT - {cap}

    def child(_: int) -> int:
        # a private mount namespace, so that a mount that succeeds stays in this child
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        caps.apply(caps.docker_sets(chosen, 0), User())
        try:
            probe(tmp_path)
        except OSError as e:
            return e.errno or -1
        return 0

    assert in_child(child) == (0 if held else errno.EPERM)
