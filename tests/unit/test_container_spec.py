"""ContainerSpec (runtime/container/spec.py): every `corral run` option validated with an
error naming the option, the value and the allowed form; nothing created; config.json
round-trips. The time-namespace offsets are checked against this host's real kernel."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Snapshot
from test_capabilities import drop_own, in_child

from runtime import syscalls
from runtime.container.config import spec_from_dict, spec_to_dict
from runtime.container.limits import ContainerLimits, parse_limits
from runtime.container.spec import (
    DEFAULT_PATH,
    NAME_FORM,
    TIMENS_MAX_SECONDS,
    ContainerSpec,
    SpecError,
    TimeOffsets,
    build_spec,
    generate_name,
    parse_time_offsets,
    renamed,
)
from runtime.container.volumes import Volume
from runtime.security.capabilities import User


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "sh").write_bytes(b"")
    return root


def spec(rootfs: Path, **options: Any) -> ContainerSpec:
    return build_spec(rootfs=str(rootfs), command=("sh", "-c", "true"), **options)


def refused(rootfs: Path, option: str, **options: Any) -> str:
    """The message of the SpecError the options raise; it must name ``option``."""
    with pytest.raises(SpecError) as err:
        spec(rootfs, **options)
    message = str(err.value)
    assert option in message, message
    return message


def block_device() -> str:
    """A block device node this kernel has (io limits resolve it to MAJ:MIN)."""
    for name in sorted(os.listdir("/dev")):
        path = f"/dev/{name}"
        st = os.stat(path)
        dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        if stat.S_ISBLK(st.st_mode) and os.path.exists(f"/sys/dev/block/{dev}"):
            return path
    raise AssertionError("no block device in /dev that /sys/dev/block knows")


# -- defaults and names ------------------------------------------------------------------------


def test_defaults_follow_docker(rootfs: Path) -> None:
    s = spec(rootfs)
    assert s.generated_name and re.fullmatch(r"[a-z]+_[a-z]+", s.name)
    assert s.hostname == s.name
    assert s.env == (f"PATH={DEFAULT_PATH}", f"HOSTNAME={s.name}")
    assert (s.workdir, s.user, s.userns, s.network) == ("/", User(0, 0), "host", "none")
    assert s.rootfs == str(rootfs) and s.command == ("sh", "-c", "true")
    assert s.limits == ContainerLimits() and s.time_offsets == TimeOffsets()
    assert (s.volumes, s.labels, s.cap_add, s.cap_drop) == ((), (), (), ())
    assert not (s.read_only or s.init or s.detach or s.rm)


def test_generated_names_vary_and_are_valid_names() -> None:
    names = {generate_name() for _ in range(200)}
    assert len(names) > 50
    assert all(re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", n) for n in names)


@pytest.mark.parametrize("name", ["a", "web", "Web-1.x_y", "0", "x" * 128])
def test_docker_names_are_accepted(rootfs: Path, name: str) -> None:
    s = spec(rootfs, name=name)
    assert (s.name, s.generated_name, s.hostname) == (name, False, name[:64])


@pytest.mark.parametrize("name", ["", "-a", "_a", ".a", "a/b", "a b", "é", "x" * 129, "a\0"])
def test_bad_names_are_refused_with_the_rule(rootfs: Path, name: str) -> None:
    message = refused(rootfs, "--name", name=name)
    assert repr(name) in message and NAME_FORM in message


def test_network_host_keeps_the_hosts_hostname(rootfs: Path) -> None:
    s = spec(rootfs, name="web", network="host")
    assert s.hostname == os.uname().nodename
    assert f"HOSTNAME={os.uname().nodename}" in s.env


def test_explicit_hostname_is_checked_against_the_kernels_length(rootfs: Path) -> None:
    assert spec(rootfs, hostname="h" * 64).hostname == "h" * 64
    assert "64 characters" in refused(rootfs, "--hostname", hostname="h" * 65)
    refused(rootfs, "--hostname", hostname="a/b")


def test_renamed_moves_the_derived_hostname_but_not_a_given_one(rootfs: Path) -> None:
    derived = renamed(spec(rootfs), "other")
    assert (derived.name, derived.hostname) == ("other", "other")
    assert "HOSTNAME=other" in derived.env
    given = renamed(spec(rootfs, hostname="box"), "other")
    assert (given.name, given.hostname) == ("other", "box") and "HOSTNAME=box" in given.env


# -- environment, workdir, user, labels ----------------------------------------------------


def test_env_replaces_appends_and_takes_values_from_the_caller(rootfs: Path) -> None:
    caller = {"TOKEN": "s3cret", "PATH": "/caller/bin"}
    s = spec(
        rootfs,
        name="web",
        env=("A=1", "B=x=y", "TOKEN", "A=2", "EMPTY=", "PATH=/opt/bin"),
        caller_env=caller,
    )
    assert s.env == ("PATH=/opt/bin", "HOSTNAME=web", "A=2", "B=x=y", "TOKEN=s3cret", "EMPTY=")


def test_env_name_unset_in_the_caller_removes_it_as_docker_does(rootfs: Path) -> None:
    s = spec(rootfs, name="web", env=("PATH", "HOSTNAME=mine", "GONE"), caller_env={})
    assert s.env == ("HOSTNAME=mine",)


@pytest.mark.parametrize("item", ["=x", "", "A=b\0c"])
def test_bad_env_items_are_refused(rootfs: Path, item: str) -> None:
    assert "K=V or K" in refused(rootfs, "-e/--env", env=(item,))


def test_env_defaults_to_the_callers_own_environment(
    rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_SPEC_TEST", "from-caller")
    assert "CORRAL_SPEC_TEST=from-caller" in spec(rootfs, env=("CORRAL_SPEC_TEST",)).env


def test_workdir_must_be_absolute_and_is_normalised(rootfs: Path) -> None:
    assert spec(rootfs, workdir="/srv/../app//x/").workdir == "/app/x"
    assert spec(rootfs, workdir="//app").workdir == "/app"
    assert "absolute" in refused(rootfs, "-w/--workdir", workdir="app")


def test_user_is_numeric_uid_and_gid(rootfs: Path) -> None:
    assert spec(rootfs, user="1000").user == User(1000, 0)
    assert spec(rootfs, user="1000:100").user == User(1000, 100)
    assert "UID[:GID]" in refused(rootfs, "-u/--user", user="nobody")
    assert "out of range" in refused(rootfs, "-u/--user", user="4294967295")


def test_labels_keep_order_last_wins_and_a_bare_key_is_empty(rootfs: Path) -> None:
    s = spec(rootfs, label=("b=2", "a=x=y", "flag", "b=3"))
    assert s.labels == (("b", "3"), ("a", "x=y"), ("flag", ""))
    assert s.label_map == {"b": "3", "a": "x=y", "flag": ""}
    refused(rootfs, "--label", label=("=v",))


def test_modes_are_checked(rootfs: Path) -> None:
    assert spec(rootfs, userns="auto").userns == "auto"
    assert "host or auto" in refused(rootfs, "--userns", userns="keep-id")
    assert "none or host or bridge" in refused(rootfs, "--network", network="overlay")


# -- rootfs, command, volumes -------------------------------------------------------------


def test_rootfs_must_be_an_existing_non_empty_directory(rootfs: Path, tmp_path: Path) -> None:
    assert "does not exist" in refused(rootfs / "missing", "ROOTFS")
    assert "not a directory" in refused(rootfs / "bin" / "sh", "ROOTFS")
    (tmp_path / "empty").mkdir()
    assert "corral rootfs busybox" in refused(tmp_path / "empty", "ROOTFS")


def test_rootfs_is_stored_resolved(rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(rootfs)
    assert spec(tmp_path / "link").rootfs == str(rootfs.resolve())


@pytest.mark.parametrize("command", [(), ("",), ("sh", "a\0b")])
def test_bad_commands_are_refused(rootfs: Path, command: tuple[str, ...]) -> None:
    with pytest.raises(SpecError, match="CMD"):
        build_spec(rootfs=str(rootfs), command=command)


def test_volumes_are_parsed_and_a_missing_source_names_the_option(
    rootfs: Path, tmp_path: Path
) -> None:
    s = spec(rootfs, volume=(f"{tmp_path}:/data:ro",))
    assert s.volumes == (Volume(str(tmp_path), "/data", read_only=True),)
    message = refused(rootfs, "-v/--volume", volume=(f"{tmp_path}/nope:/data",))
    assert "does not exist" in message and "SRC:DST" in message


# -- capabilities and limits --------------------------------------------------------------


def test_capabilities_are_canonical_and_deduplicated(rootfs: Path) -> None:
    s = spec(rootfs, cap_add=("net_admin", "CAP_NET_ADMIN"), cap_drop=("Mknod", "all"))
    assert (s.cap_add, s.cap_drop) == (("CAP_NET_ADMIN",), ("CAP_MKNOD", "ALL"))
    assert "'bogus'" in refused(rootfs, "--cap-add", cap_add=("bogus",))
    assert "'nope'" in refused(rootfs, "--cap-drop", cap_drop=("nope",))


def test_adding_a_capability_this_process_lacks_is_refused(rootfs: Path) -> None:
    def child(_fd: int) -> str:
        drop_own("SYS_ADMIN")
        try:
            spec(rootfs, cap_add=("SYS_ADMIN",))
        except SpecError as e:
            return str(e)
        return "accepted"

    message = in_child(child)
    assert message.startswith("--cap-add") and "CAP_SYS_ADMIN" in message


def test_limits_come_from_parse_limits_and_errors_name_the_option(rootfs: Path) -> None:
    s = spec(rootfs, memory="64m", memory_swap="128m", cpus="0.5", pids_limit="100")
    assert s.limits == parse_limits(memory="64m", memory_swap="128m", cpus="0.5", pids_limit="100")
    assert s.limits.memory == 64 << 20
    assert "'1x'" in refused(rootfs, "--memory", memory="1x")
    assert "needs --memory" in refused(rootfs, "--memory-swap", memory_swap="1g")
    refused(rootfs, "--cpu-weight", cpu_weight="0")
    refused(rootfs, "--pids-limit", pids_limit="0")


def test_a_bad_option_creates_nothing(rootfs: Path, tmp_path: Path, snapshot: Snapshot) -> None:
    before = snapshot(tmp_path)
    refused(rootfs, "--memory", name="web", volume=(f"{tmp_path}:/d",), memory="lots")
    spec(rootfs, name="web", volume=(f"{tmp_path}:/d",), memory="64m")
    assert snapshot(tmp_path) == before


# -- time namespace offsets ----------------------------------------------------------------


def test_time_offsets_accept_decimals_and_store_nanoseconds() -> None:
    offsets = parse_time_offsets(["monotonic=-1.5", "boottime=3600"])
    assert offsets == TimeOffsets(-1_500_000_000, 3600 * 10**9)
    assert offsets.lines() == "monotonic -2 500000000\nboottime 3600 0\n"
    assert parse_time_offsets(["boottime=+0.000000001"]) == TimeOffsets(0, 1)
    assert parse_time_offsets([]).lines() == ""


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("realtime=5", "unknown clock 'realtime'"),
        ("monotonic", "is not CLOCK=SECONDS"),
        ("monotonic=1,monotonic=2", "monotonic given twice"),
        ("monotonic=1.0000000001", "at most 9 decimals"),
        ("boottime=1e3", "at most 9 decimals"),
        ("monotonic=", "at most 9 decimals"),
        (f"boottime=-{10**12}", "the kernel keeps it within 0.."),
        (f"boottime={TIMENS_MAX_SECONDS}", "the kernel keeps it within 0.."),
    ],
)
def test_bad_time_offsets_are_refused(rootfs: Path, value: str, why: str) -> None:
    message = refused(rootfs, "--time-offset", time_offset=value)
    assert why in message and "monotonic=SECONDS,boottime=SECONDS" in message


def test_the_kernel_takes_the_offsets_as_written() -> None:
    """A child in a new time namespace writes lines() to /proc/self/timens_offsets; the
    kernel reads them back as the same seconds and nanoseconds, and a child forked into the
    namespace sees CLOCK_MONOTONIC moved by the offset."""
    uptime = time.clock_gettime(time.CLOCK_MONOTONIC)
    offsets = parse_time_offsets([f"monotonic=-{uptime / 2:.3f},boottime=86400.25"])

    def child(_fd: int) -> tuple[str, float]:
        syscalls.unshare(syscalls.CLONE_NEWTIME)
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(offsets.lines())
        with open("/proc/self/timens_offsets") as f:
            written = f.read()
        return written, in_child(lambda _: time.clock_gettime(time.CLOCK_MONOTONIC))

    written, inside = in_child(child)
    parsed = {line.split()[0]: line.split()[1:] for line in written.splitlines()}
    seconds, nanos = divmod(offsets.monotonic_ns, 10**9)
    assert parsed == {"monotonic": [str(seconds), str(nanos)], "boottime": ["86400", "250000000"]}
    expected = time.clock_gettime(time.CLOCK_MONOTONIC) + offsets.monotonic_ns / 1e9
    assert abs(inside - expected) < 5


# -- config.json ---------------------------------------------------------------------------


def test_every_option_round_trips_through_config_json(rootfs: Path, tmp_path: Path) -> None:
    device = block_device()
    s = spec(
        rootfs,
        name="full",
        detach=True,
        rm=True,
        env=("A=1",),
        workdir="/srv",
        user="1000:1000",
        hostname="box",
        volume=(f"{tmp_path}:/data:ro", f"{rootfs}:/other"),
        read_only=True,
        label=("tier=web", "empty"),
        init=True,
        userns="auto",
        time_offset="monotonic=2.5,boottime=-0.5",
        network="host",
        cap_add=("NET_ADMIN",),
        cap_drop=("ALL",),
        memory="64m",
        memory_high="48m",
        memory_swap="-1",
        cpus="1",
        cpu_weight="200",
        cpuset_cpus="0",
        pids_limit="max",
        device_read_bps=(f"{device}:1m",),
        device_write_iops=(f"{device}:100",),
    )
    assert s.limits.io and s.limits.pids_limit is not None
    d = spec_to_dict(s)
    assert spec_from_dict(d) == s
    assert d["labels"] == {"tier": "web", "empty": ""}
    assert d["time_offsets"] == {"monotonic_ns": 2_500_000_000, "boottime_ns": -500_000_000}
    generated = spec(rootfs)
    assert spec_from_dict(spec_to_dict(generated)) == generated


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": 2}, "version"),
        ({"name": None}, "name"),
        ({"command": ["sh", 1]}, "command"),
        ({"labels": {"a": 1}}, "labels"),
        ({"user": {"uid": "0", "gid": 0, "groups": []}}, "uid"),
        ({"userns": "private"}, "userns"),
        ({"read_only": "yes"}, "read_only"),
        ({"volumes": [{"source": "/x"}]}, "destination"),
    ],
)
def test_a_malformed_config_names_the_field(
    rootfs: Path, change: dict[str, Any], field: str
) -> None:
    d = spec_to_dict(spec(rootfs))
    d.update(change)
    with pytest.raises(SpecError, match=field):
        spec_from_dict(d)
