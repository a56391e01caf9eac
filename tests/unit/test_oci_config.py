"""config.json -> OciConfig: the fixtures captured from runc, crun and umoci, and every
refusal of the top level and of process, with the exact message."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runtime.cgroupfs.formats import MAX
from runtime.container.limits import ContainerLimits
from runtime.container.userns import IdMap
from runtime.oci.config import OciConfigError, OciMount, OciNamespace, load_bundle, parse_config

FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"
BUNDLE = "/b"
DEFAULT_CAPS = frozenset({"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"})
MASKED = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def base() -> dict[str, Any]:
    return copy.deepcopy(fixture("runc-spec.json"))


def refused(data: object, message: str, bundle: str = BUNDLE) -> None:
    with pytest.raises(OciConfigError) as info:
        parse_config(data, bundle)
    assert str(info.value) == message


def with_(path: str, value: object) -> dict[str, Any]:
    """The runc spec config with ``path`` (dotted, [i] for indexes) set to ``value``."""
    data = base()
    node: Any = data
    keys: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        keys.append(name)
        if index:
            keys.append(int(index.rstrip("]")))
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    if isinstance(node, list) and keys[-1] == len(node):
        node.append(value)
    else:
        node[keys[-1]] = value
    return data


# -- fixtures -----------------------------------------------------------------------------------


def test_runc_spec_terminal_off() -> None:
    c = parse_config(fixture("runc-spec.json"), BUNDLE)
    assert c.oci_version == "1.0.2-dev"
    assert (c.root, c.root_readonly) == ("/b/rootfs", True)
    assert c.process.args == ("sh",) and c.process.cwd == "/"
    assert c.process.env == (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM=xterm",
    )
    assert (c.process.uid, c.process.gid, c.process.additional_gids, c.process.umask) == (
        0,
        0,
        (),
        None,
    )
    assert c.process.capabilities.bounding == DEFAULT_CAPS == c.process.capabilities.permitted
    assert c.process.capabilities.effective == DEFAULT_CAPS == c.process.capabilities.ambient
    assert c.process.rlimits == (("RLIMIT_NOFILE", 1024, 1024),)
    assert c.process.no_new_privileges is True and c.hostname == "runc"
    assert [m.destination for m in c.mounts] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert c.mounts[1] == OciMount(
        "/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")
    )
    assert c.namespaces == tuple(OciNamespace(t) for t in ("pid", "network", "ipc", "uts", "mount"))
    assert c.uid_mappings == () == c.gid_mappings and c.time_offsets is None
    assert c.limits == ContainerLimits() and dict(c.unified) == {} == dict(c.resource_files)
    assert c.masked_paths == MASKED and c.readonly_paths == READONLY
    assert c.cgroups_path is None and dict(c.annotations) == {} == dict(c.sysctl)
    assert c.namespace("network") == OciNamespace("network") and c.namespace("user") is None


def test_runc_spec_rootless() -> None:
    c = parse_config(fixture("runc-spec-rootless.json"), BUNDLE)
    assert [n.type for n in c.namespaces] == ["pid", "ipc", "uts", "mount", "user"]
    assert c.uid_mappings == (IdMap(0, os.getuid(), 1),)
    assert c.gid_mappings == (IdMap(0, os.getgid(), 1),)
    sys_mount = next(m for m in c.mounts if m.destination == "/sys")
    assert sys_mount == OciMount(
        "/sys", "none", "/sys", ("rbind", "nosuid", "noexec", "nodev", "ro")
    )
    cgroup = OciMount(
        "/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")
    )
    assert sys_mount.bind and c.mounts[-1] == cgroup
    assert c.masked_paths == MASKED and c.readonly_paths == READONLY


def test_crun_spec() -> None:
    c = parse_config(fixture("crun-spec.json"), BUNDLE)
    assert c.hostname == "crun" and c.process.args == ("sh",) and c.root == "/b/rootfs"
    assert [n.type for n in c.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert c.mounts[-1] == OciMount(
        "/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")
    )
    assert c.process.rlimits == (("RLIMIT_NOFILE", 1024, 1024),) and c.process.no_new_privileges


def test_umoci_unpack() -> None:
    c = parse_config(fixture("umoci-unpack.json"), BUNDLE)
    assert c.oci_version == "1.0.0" and (c.root, c.root_readonly) == ("/b/rootfs", False)
    assert c.process.args == ("sh", "-c", "echo hello from umoci")
    assert c.process.env == ("PATH=/bin:/usr/bin", "TERM=xterm", "HOME=/root")
    assert c.process.capabilities.ambient == DEFAULT_CAPS == c.process.capabilities.inheritable
    assert c.hostname == "umoci-default"
    assert c.annotations["org.opencontainers.image.os"] == "linux"
    assert c.masked_paths[0] == "/proc/kcore" and c.readonly_paths[0] == "/proc/asound"


@pytest.mark.parametrize("name", ["crun-spec-raw.json", "umoci-unpack-raw.json"])
def test_generated_terminal_true_is_refused(name: str) -> None:
    refused(
        fixture(name),
        "config.json: process.terminal: true: corral runs containers without a terminal; set false",
    )


def test_load_bundle_resolves_root(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(fixture("umoci-unpack.json")))
    c = load_bundle(str(tmp_path))
    assert c.root == str(tmp_path / "rootfs")


def test_load_bundle_refusals(tmp_path: Path) -> None:
    with pytest.raises(OciConfigError) as info:
        load_bundle(str(tmp_path))
    assert str(info.value) == (
        f"config.json: (file): '{tmp_path}/config.json': cannot be read: No such file or directory"
    )
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(OciConfigError, match=r"\(file\): .*: not valid JSON: Expecting"):
        load_bundle(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(base()))
    with pytest.raises(OciConfigError) as info:
        load_bundle(str(tmp_path))
    assert str(info.value) == (
        f"config.json: root.path: 'rootfs': {tmp_path}/rootfs is not a directory"
    )


def test_load_bundle_symlinked_root_escaping(tmp_path: Path) -> None:
    os.symlink("/", tmp_path / "rootfs")
    (tmp_path / "config.json").write_text(json.dumps(base()))
    with pytest.raises(OciConfigError) as info:
        load_bundle(str(tmp_path))
    assert str(info.value) == (
        f"config.json: root.path: 'rootfs': resolves to / (symlinks followed), outside the "
        f"bundle {tmp_path}; give an absolute path instead"
    )


def test_load_bundle_hostile_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"ociVersion": "1.0.2", "ociVersion": "1.0.2"}')
    with pytest.raises(OciConfigError) as info:
        load_bundle(str(tmp_path))
    assert str(info.value) == "config.json: (file): 'ociVersion': a key given twice in one object"
    (tmp_path / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(OciConfigError, match=r"not valid JSON: maximum recursion depth"):
        load_bundle(str(tmp_path))


def test_empty_hostname_is_none() -> None:
    data = with_("hostname", "")
    data["linux"]["namespaces"] = [{"type": "mount"}]
    assert parse_config(data, BUNDLE).hostname is None


def test_huge_float_uid() -> None:
    refused(
        with_("process.user.uid", float("inf")),
        f"config.json: process.user.uid: Infinity: must be {IDS}, not a number with a fraction "
        "or exponent",
    )


def test_load_bundle_huge_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(OciConfigError, match=r": larger than 4194304 bytes$"):
        load_bundle(str(tmp_path))


# -- top level ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "(top level): [1]: must be an object, not array"),
        ("x", "(top level): 'x': must be an object, not string"),
        (None, "(top level): null: must be an object, not null"),
        ({}, "ociVersion: missing: required: a string"),
    ],
)
def test_non_object_json(data: object, message: str) -> None:
    refused(data, "config.json: " + message)


def test_top_level_fields() -> None:
    refused(
        with_("ociVersion", "2.0"),
        "config.json: ociVersion: '2.0': a runtime-spec version 1.x like 1.0.2",
    )
    refused(
        with_("hooks", {"prestart": [{"path": "/bin/true"}]}),
        'config.json: hooks: {"prestart": [{"path": "/bin/true"}]}: hooks is not supported '
        "by corral",
    )
    refused(
        with_("domainname", "example"),
        "config.json: domainname: 'example': is not supported by corral; leave it out",
    )
    refused(
        with_("hostnmae", "x"),
        "config.json: hostnmae: 'x': unknown field; the top level "
        "allows annotations, hostname, linux, mounts, ociVersion, process, root",
    )
    assert parse_config(with_("hooks", {}), BUNDLE).hostname == "runc"  # empty: asks nothing


def test_hostname() -> None:
    refused(with_("hostname", 5), "config.json: hostname: 5: must be a string, not number")
    refused(
        with_("hostname", "h" * 65),
        f"config.json: hostname: '{'h' * 65}': at most 64 bytes (HOST_NAME_MAX)",
    )
    data = base()
    data["linux"]["namespaces"] = [{"type": "mount"}]
    refused(
        data,
        "config.json: hostname: 'runc': needs a new uts namespace in "
        'linux.namespaces (add {"type": "uts"})',
    )


def test_annotations() -> None:
    refused(
        with_("annotations", {"a": 1}),
        "config.json: annotations.a: 1: must be a string, not number",
    )
    refused(
        with_("annotations", {"org.x": None}),
        'config.json: annotations["org.x"]: null: must be a string, not null',
    )


def test_root() -> None:
    refused(
        with_("root.path", "rootfs/../../etc"),
        "config.json: root.path: 'rootfs/../../etc':"
        " a relative path must stay inside the bundle /b",
    )
    refused(
        with_("root.path", ".."),
        "config.json: root.path: '..': a relative path must stay inside the bundle /b",
    )
    refused(
        with_("root.path", "."),
        "config.json: root.path: '.': must name a directory inside "
        "the bundle, not the bundle itself",
    )
    refused(with_("root.path", ""), "config.json: root.path: '': must not be empty")
    refused(
        with_("root.readonly", "yes"),
        "config.json: root.readonly: 'yes': must be true or false, not string",
    )
    refused(with_("root", "rootfs"), "config.json: root: 'rootfs': must be an object, not string")
    assert parse_config(with_("root.path", "/srv/r/../x"), BUNDLE).root == "/srv/x"
    assert parse_config(with_("root.path", "a/./b/../r"), BUNDLE).root == "/b/a/r"


# -- process ------------------------------------------------------------------------------------


def test_process_terminal() -> None:
    refused(
        with_("process.terminal", True),
        "config.json: process.terminal: true: corral runs containers without a terminal; set false",
    )
    refused(
        with_("process.terminal", 1),
        "config.json: process.terminal: 1: must be true or false, not number",
    )
    refused(
        with_("process.consoleSize", {"height": 1, "width": 2}),
        'config.json: process.consoleSize: {"height": 1, "width": 2}: needs a terminal; '
        "corral runs containers without one",
    )


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("apparmorProfile", "docker-default", "AppArmor is not supported by corral"),
        ("selinuxLabel", "system_u:r", "SELinux is not supported by corral"),
        ("oomScoreAdj", 100, "is not supported by corral; leave it out"),
        ("scheduler", {"policy": "SCHED_FIFO"}, "is not supported by corral; leave it out"),
        ("ioPriority", {"class": "IOPRIO_CLASS_RT"}, "is not supported by corral; leave it out"),
        ("commandLine", "cmd.exe", "is Windows-only"),
    ],
)
def test_process_refused_fields(field: str, value: object, why: str) -> None:
    shown = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    refused(with_(f"process.{field}", value), f"config.json: process.{field}: {shown}: {why}")


def test_process_args_env_cwd() -> None:
    refused(
        with_("process.args", []), "config.json: process.args: []: needs the program to run first"
    )
    refused(
        with_("process.args", ["sh", 1]),
        "config.json: process.args[1]: 1: must be a string, not number",
    )
    refused(
        with_("process.args", "sh"), "config.json: process.args: 'sh': must be an array, not string"
    )
    refused(
        with_("process.args", ["a\0b"]),
        "config.json: process.args[0]: 'a\\x00b': must not contain a NUL byte",
    )
    refused(
        with_("process.env", ["PATH=/bin", "JUNK"]),
        "config.json: process.env[1]: 'JUNK': must be NAME=VALUE",
    )
    refused(
        with_("process.cwd", "tmp"),
        "config.json: process.cwd: 'tmp': must be an absolute path in the container",
    )
    data = base()
    del data["process"]["cwd"]
    refused(data, "config.json: process.cwd: missing: required: a string")
    data = base()
    del data["process"]
    refused(data, "config.json: process: missing: required: an object")


IDS = "an id 0..4294967294 (4294967295 is (uid_t)-1, which setresuid reads as 'unchanged')"


def test_process_user() -> None:
    refused(
        with_("process.user.uid", 2**32),
        f"config.json: process.user.uid: 4294967296: out of range: allowed {IDS}",
    )
    refused(
        with_("process.user.uid", 2**32 - 1),
        f"config.json: process.user.uid: 4294967295: out of range: allowed {IDS}",
    )
    refused(
        with_("process.user.gid", -1),
        f"config.json: process.user.gid: -1: out of range: allowed {IDS}",
    )
    refused(
        with_("process.user.uid", "0"),
        f"config.json: process.user.uid: '0': must be {IDS}, not string",
    )
    refused(
        with_("process.user.uid", True),
        f"config.json: process.user.uid: true: must be {IDS}, not boolean",
    )
    refused(
        with_("process.user.uid", 1.5),
        f"config.json: process.user.uid: 1.5: must be {IDS}, not a number with a fraction or "
        "exponent",
    )
    refused(
        with_("process.user.additionalGids", [1, 10**30]),
        f"config.json: process.user.additionalGids[1]: {10**30}: out of range: allowed {IDS}",
    )
    refused(
        with_("process.user.umask", 0o1000),
        "config.json: process.user.umask: 512: out of range: allowed a mode 0..511 (0o777)",
    )
    refused(
        with_("process.user.username", "root"),
        "config.json: process.user.username: 'root': is Windows-only",
    )
    refused(
        with_("process.user.gid", 100.0),
        f"config.json: process.user.gid: 100.0: must be {IDS}, not a number with a fraction or "
        "exponent",
    )
    data = with_("process.user", {"uid": 1000, "gid": 100, "umask": 18, "additionalGids": [10]})
    c = parse_config(data, BUNDLE)
    assert (c.process.uid, c.process.gid, c.process.umask, c.process.additional_gids) == (
        1000,
        100,
        0o22,
        (10,),
    )


def test_process_capabilities() -> None:
    refused(
        with_("process.capabilities.effective", ["CAP_KILL", "CAP_FOO"]),
        "config.json: process.capabilities.effective[1]: 'CAP_FOO': unknown capability; "
        "allowed the capabilities(7) names CAP_CHOWN .. CAP_CHECKPOINT_RESTORE",
    )
    refused(
        with_("process.capabilities.effective", ["kill"]),
        "config.json: process.capabilities.effective[0]: 'kill': unknown capability; "
        "allowed the capabilities(7) names CAP_CHOWN .. CAP_CHECKPOINT_RESTORE",
    )
    refused(
        with_("process.capabilities.extra", []),
        "config.json: process.capabilities.extra: "
        "[]: unknown field; process.capabilities allows ambient, bounding, effective, "
        "inheritable, permitted",
    )
    c = parse_config(with_("process.capabilities", {"bounding": ["CAP_SYS_ADMIN"]}), BUNDLE)
    assert (
        c.process.capabilities.bounding == {"CAP_SYS_ADMIN"}
        and c.process.capabilities.effective == set()
    )


UINT64 = "0..18446744073709551615 (18446744073709551615 is unlimited)"


def test_process_rlimits() -> None:
    refused(
        with_(
            "process.rlimits",
            [
                {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                {"type": "RLIMIT_FOO", "soft": 1, "hard": 1},
            ],
        ),
        "config.json: process.rlimits[1].type: 'RLIMIT_FOO': allowed RLIMIT_CPU, "
        "RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_STACK, RLIMIT_CORE, RLIMIT_RSS, RLIMIT_NPROC, "
        "RLIMIT_NOFILE, RLIMIT_MEMLOCK, RLIMIT_AS, RLIMIT_LOCKS, RLIMIT_SIGPENDING, "
        "RLIMIT_MSGQUEUE, RLIMIT_NICE, RLIMIT_RTPRIO, RLIMIT_RTTIME",
    )
    refused(
        with_("process.rlimits[0].hard", 2**64),
        f"config.json: process.rlimits[0].hard: "
        f"18446744073709551616: out of range: allowed {UINT64}",
    )
    refused(
        with_("process.rlimits[0].soft", -1),
        f"config.json: process.rlimits[0].soft: -1: out of range: allowed {UINT64}",
    )
    refused(
        with_("process.rlimits[0].soft", 2048),
        "config.json: process.rlimits[0].soft: 2048: must be at most hard (1024)",
    )
    refused(
        with_("process.rlimits[1]", {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}),
        "config.json: process.rlimits[1].type: 'RLIMIT_NOFILE': already "
        "process.rlimits[0]; each type may be given once",
    )
    refused(
        with_("process.rlimits[0]", {"type": "RLIMIT_CORE", "soft": 1}),
        f"config.json: process.rlimits[0].hard: missing: required: {UINT64}",
    )
    top = 2**64 - 1
    c = parse_config(with_("process.rlimits[0].hard", top), BUNDLE)
    assert c.process.rlimits == (("RLIMIT_NOFILE", 1024, top),)


def test_limits_default_is_empty() -> None:
    c = parse_config(base(), BUNDLE)
    assert c.limits.pids_limit is None and MAX is not None
