"""config.json linux section and mounts: namespaces (joined by path: checked on this host's
nsfs), id mappings, timeOffsets, sysctl, cgroupsPath, devices, mounts, masked/readonly
paths; every refusal with its exact message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runtime.container.spec import TimeOffsets
from runtime.container.userns import IdMap
from runtime.oci.config import OciMount, OciNamespace, parse_config
from tests.unit.test_oci_config import BUNDLE, base, refused, with_

ROOTLESS_NS = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]


def userns(uid_maps: object, gid_maps: object | None = None) -> dict[str, Any]:
    data = base()
    data["linux"]["namespaces"] = ROOTLESS_NS
    data["linux"]["uidMappings"] = uid_maps
    data["linux"]["gidMappings"] = (
        [{"containerID": 0, "hostID": 1000, "size": 1}] if gid_maps is None else gid_maps
    )
    return data


# -- namespaces ---------------------------------------------------------------------------------


def test_unknown_and_duplicate_namespace() -> None:
    refused(
        with_("linux.namespaces[5]", {"type": "net"}),
        "config.json: "
        "linux.namespaces[5].type: 'net': allowed pid, network, ipc, uts, mount, user, "
        "cgroup, time",
    )
    refused(
        with_("linux.namespaces[5]", {"type": "pid"}),
        "config.json: "
        "linux.namespaces[5].type: 'pid': already linux.namespaces[0]; each type may be "
        "given once",
    )
    refused(
        with_("linux.namespaces[0]", {"type": "pid", "flags": 1}),
        "config.json: "
        "linux.namespaces[0].flags: 1: unknown field; linux.namespaces[0] allows path, "
        "type",
    )
    refused(
        with_("linux.namespaces", {"type": "pid"}),
        'config.json: linux.namespaces: {"type": "pid"}: must be an array, not object',
    )


def test_join_namespace_by_path() -> None:
    data = with_("linux.namespaces[1]", {"type": "network", "path": "/proc/self/ns/net"})
    data["linux"]["namespaces"].append({"type": "cgroup", "path": ""})
    c = parse_config(data, BUNDLE)
    assert c.namespaces[1] == OciNamespace("network", "/proc/self/ns/net")
    assert c.namespaces[-1] == OciNamespace("cgroup")  # empty path: a new one (the spec)


def test_namespace_path_refusals(tmp_path: Path) -> None:
    plain = tmp_path / "ns"
    plain.write_text("")
    refused(
        with_("linux.namespaces[1]", {"type": "network", "path": str(plain)}),
        f"config.json: linux.namespaces[1].path: '{plain}': is not a namespace file "
        f"(statfs type {_fs_magic(tmp_path)}, nsfs is 0x6e736673)",
    )
    refused(
        with_("linux.namespaces[1]", {"type": "network", "path": "/proc/self/ns/uts"}),
        "config.json: linux.namespaces[1].path: '/proc/self/ns/uts': is a uts namespace, "
        "not a network namespace",
    )
    refused(
        with_("linux.namespaces[1]", {"type": "network", "path": "proc/1/ns/net"}),
        "config.json: linux.namespaces[1].path: 'proc/1/ns/net': must be an absolute path "
        "like /proc/PID/ns/network",
    )
    missing = tmp_path / "nope"
    refused(
        with_("linux.namespaces[1]", {"type": "network", "path": str(missing)}),
        f"config.json: linux.namespaces[1].path: '{missing}': cannot be opened (No such file"
        " or directory); expected a network namespace file like /proc/PID/ns/network",
    )


def _fs_magic(path: Path) -> str:
    from runtime import syscalls

    return hex(syscalls.statfs_type(str(path)))


# -- mappings -----------------------------------------------------------------------------------


def test_mappings_parsed() -> None:
    c = parse_config(userns([{"containerID": 0, "hostID": 100000, "size": 65536}]), BUNDLE)
    assert c.uid_mappings == (IdMap(0, 100000, 65536),)
    assert c.gid_mappings == (IdMap(0, 1000, 1),)


def test_mappings_refusals() -> None:
    refused(
        userns(
            [
                {"containerID": 0, "hostID": 100000, "size": 10},
                {"containerID": 5, "hostID": 200000, "size": 10},
            ]
        ),
        'config.json: linux.uidMappings[1]: {"containerID": 5, "hostID": 200000, "size": '
        "10}: overlaps linux.uidMappings[0] on the container side; ranges must be "
        "disjoint",
    )
    refused(
        userns(
            [
                {"containerID": 0, "hostID": 100000, "size": 10},
                {"containerID": 10, "hostID": 100009, "size": 1},
            ]
        ),
        'config.json: linux.uidMappings[1]: {"containerID": 10, "hostID": 100009, "size": '
        "1}: overlaps linux.uidMappings[0] on the host side; ranges must be disjoint",
    )
    refused(
        userns([{"containerID": 0, "hostID": 2**32, "size": 1}]),
        "config.json: linux.uidMappings[0].hostID: 4294967296: out of range: allowed an "
        "integer 0..4294967294",
    )
    refused(
        userns([{"containerID": 4294967290, "hostID": 0, "size": 10}]),
        'config.json: linux.uidMappings[0]: {"containerID": 4294967290, "hostID": 0, '
        '"size": 10}: containerID + size - 1 must be at most 4294967294',
    )
    refused(
        userns([{"containerID": 0, "hostID": 0, "size": 0}]),
        "config.json: linux.uidMappings[0].size: 0: out of range: allowed an integer 1..4294967295",
    )
    refused(
        userns([{"containerID": i, "hostID": i, "size": 1} for i in range(341)]),
        "config.json: linux.uidMappings: '341 lines': at most 340 lines",
    )
    refused(
        userns([]),
        "config.json: linux.uidMappings: []: a new user namespace needs "
        "mappings (containerID, hostID, size)",
    )
    data = userns([{"containerID": 0, "hostID": 1000, "size": 1}])
    data["linux"]["namespaces"] = ROOTLESS_NS[:-1]
    refused(
        data,
        'config.json: linux.uidMappings: [{"containerID": 0, "hostID": 1000, "size": '
        '1}]: mappings need a new user namespace in linux.namespaces (add {"type": '
        '"user"})',
    )


# -- timeOffsets, sysctl, cgroupsPath, devices ----------------------------------------------------


def test_time_offsets() -> None:
    data = with_(
        "linux.timeOffsets",
        {"monotonic": {"secs": -2, "nanosecs": 500000000}, "boottime": {"secs": 86400}},
    )
    refused(
        data,
        'config.json: linux.timeOffsets: {"boottime": {"secs": 86400}, "monotonic": '
        '{"nanosecs": 500000000, "secs": -2}}: needs a new time namespace in '
        'linux.namespaces (add {"type": "time"})',
    )
    data["linux"]["namespaces"].append({"type": "time"})
    c = parse_config(data, BUNDLE)
    assert c.time_offsets == TimeOffsets(-1_500_000_000, 86400 * 10**9)
    refused(
        with_("linux.timeOffsets", {"monotonic": {"nanosecs": 10**9}}),
        "config.json: linux.timeOffsets.monotonic.nanosecs: 1000000000: out of range: "
        "allowed an integer 0..999999999",
    )
    refused(
        with_("linux.timeOffsets", {"realtime": {"secs": 1}}),
        'config.json: linux.timeOffsets.realtime: {"secs": 1}: unknown field; '
        "linux.timeOffsets allows boottime, monotonic",
    )
    refused(
        with_("linux.timeOffsets", {"boottime": {"secs": 2**63}}),
        "config.json: linux.timeOffsets.boottime.secs: 9223372036854775808: out of range: "
        "allowed an integer -9223372036854775808..9223372036854775807",
    )


def test_sysctl() -> None:
    c = parse_config(
        with_(
            "linux.sysctl",
            {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.msg_max": "20"},
        ),
        BUNDLE,
    )
    assert dict(c.sysctl)["net.ipv4.ip_forward"] == "1"
    refused(
        with_("linux.sysctl", {"kernel.pid_max": "10"}),
        "config.json: "
        "linux.sysctl[\"kernel.pid_max\"]: 'kernel.pid_max': not a namespaced sysctl; "
        "allowed net.*, fs.mqueue.*, kernel.domainname and the IPC ones (kernel.msgmax, "
        "kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shm_rmid_forced, kernel.shmall, "
        "kernel.shmmax, kernel.shmmni)",
    )
    refused(
        with_("linux.sysctl", {"net/ipv4": "1"}),
        'config.json: linux.sysctl["net/ipv4"]: '
        "'net/ipv4': a sysctl name like net.ipv4.ip_forward",
    )
    refused(
        with_("linux.sysctl", {"net.core.somaxconn": 5}),
        'config.json: linux.sysctl["net.core.somaxconn"]: 5: must be a string, not number',
    )
    data = with_("linux.sysctl", {"net.core.somaxconn": "5"})
    del data["linux"]["namespaces"][1]  # network
    refused(
        data,
        "config.json: linux.sysctl[\"net.core.somaxconn\"]: 'net.core.somaxconn': "
        "needs a new network namespace in linux.namespaces (else it would change the "
        "host's)",
    )


def test_cgroups_path() -> None:
    assert parse_config(with_("linux.cgroupsPath", "/corral/x1"), BUNDLE).cgroups_path == (
        "/corral/x1"
    )
    assert parse_config(with_("linux.cgroupsPath", "a/b"), BUNDLE).cgroups_path == "a/b"
    form = (
        "a path like corral/NAME: components of letters, digits and ._@+-, no empty, '.' "
        "or '..' component"
    )
    for bad in ("corral/../../x", "/..", "a//b", "a/./b", "a b"):
        refused(
            with_("linux.cgroupsPath", bad), f"config.json: linux.cgroupsPath: {bad!r}: " + form
        )
    refused(
        with_("linux.cgroupsPath", "system.slice:corral:x"),
        "config.json: "
        "linux.cgroupsPath: 'system.slice:corral:x': systemd's slice:prefix:name form is "
        "not supported; give a path like corral/NAME",
    )
    refused(with_("linux.cgroupsPath", ""), "config.json: linux.cgroupsPath: '': must not be empty")


def test_devices_and_refused_linux_fields() -> None:
    devices_msg = (
        "corral gives containers the default devices (null, zero, full, random, "
        'urandom, tty, ptmx) and no others; only {"allow": false, "access": "rwm"} '
        "is accepted here"
    )
    refused(
        with_(
            "linux.resources.devices[1]",
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
        ),
        'config.json: linux.resources.devices[1]: {"access": "rwm", "allow": true, "major":'
        f' 10, "minor": 229, "type": "c"}}: {devices_msg}',
    )
    refused(
        with_("linux.devices", [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]),
        'config.json: linux.devices: [{"major": 10, "minor": 229, "path": "/dev/fuse", '
        '"type": "c"}]: corral creates only the default devices (runc\'s list); leave it '
        "out",
    )
    refused(
        with_("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW"}),
        "config.json: "
        'linux.seccomp: {"defaultAction": "SCMP_ACT_ALLOW"}: corral applies its own default'
        " seccomp profile; leave it out",
    )
    refused(
        with_("linux.intelRdt", {"closID": "x"}),
        'config.json: linux.intelRdt: {"closID": "x"}: Intel RDT is not supported by corral',
    )
    refused(
        with_("linux.personality", {"domain": "LINUX32"}),
        "config.json: "
        'linux.personality: {"domain": "LINUX32"}: is not supported by corral; leave it '
        "out",
    )
    refused(
        with_("linux.rootfsPropagation", "shared"),
        "config.json: linux.rootfsPropagation: "
        "'shared': is not supported by corral; the rootfs is private",
    )
    refused(
        with_("linux.mountLabel", "system_u"),
        "config.json: linux.mountLabel: 'system_u': SELinux is not supported by corral",
    )
    assert parse_config(with_("linux.seccomp", None), BUNDLE).hostname == "runc"


# -- mounts and masked/readonly paths ------------------------------------------------------------


def mount(**fields: object) -> dict[str, Any]:
    return with_("mounts[7]", fields)


def test_bind_mounts() -> None:
    c = parse_config(
        mount(destination="/data/", type="bind", source="vol/../vol2", options=["rbind", "ro"]),
        BUNDLE,
    )
    assert c.mounts[7] == OciMount("/data", "bind", "/b/vol2", ("rbind", "ro"))
    c = parse_config(mount(destination="/h", source="/srv//x", options=["bind"]), BUNDLE)
    assert c.mounts[7] == OciMount("/h", None, "/srv/x", ("bind",)) and c.mounts[7].bind


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"destination": "data", "type": "tmpfs"},
            "mounts[7].destination: 'data': must be an absolute path inside the container",
        ),
        (
            {"destination": "/a/../../etc", "type": "tmpfs"},
            "mounts[7].destination: '/a/../../etc': must not contain '..'",
        ),
        (
            {"destination": "/", "type": "tmpfs"},
            "mounts[7].destination: '/': the root is root.path; mount below it",
        ),
        (
            {"destination": "/proc/", "type": "tmpfs"},
            "mounts[7].destination: '/proc': already the destination of mounts[0]; each "
            "destination may be mounted once",
        ),
        ({"type": "tmpfs"}, "mounts[7].destination: missing: required: a string"),
        (
            {"destination": "/x", "type": "ext4", "source": "/dev/sda"},
            "mounts[7].type: 'ext4': allowed bind, cgroup, cgroup2, devpts, mqueue, none, proc, "
            "sysfs, tmpfs",
        ),
        (
            {"destination": "/x", "source": "tmp"},
            "mounts[7].type: missing: give a filesystem type (cgroup, cgroup2, devpts, mqueue, "
            "none, proc, sysfs, tmpfs) or a bind/rbind option",
        ),
        (
            {"destination": "/x", "type": "bind"},
            "mounts[7].source: missing: a bind mount needs a source path",
        ),
        (
            {"destination": "/x", "type": "bind", "source": "../../etc"},
            "mounts[7].source: '../../etc': a relative source must stay inside the bundle /b",
        ),
        (
            {"destination": "/x", "type": "bind", "source": "a/../../c", "options": ["rbind"]},
            "mounts[7].source: 'a/../../c': a relative source must stay inside the bundle /b",
        ),
        (
            {"destination": "/x", "type": "bind", "source": "/s", "options": ["rbind", "idmap"]},
            "mounts[7].options[1]: 'idmap': idmapped mounts are not supported by corral",
        ),
        (
            {
                "destination": "/x",
                "type": "bind",
                "source": "/s",
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            },
            'mounts[7].uidMappings: [{"containerID": 0, "hostID": 1, "size": 1}]: idmapped '
            "mounts are not supported by corral",
        ),
        (
            {"destination": "/x", "type": "tmpfs", "options": "ro"},
            "mounts[7].options: 'ro': must be an array, not string",
        ),
        (
            {"destination": 7, "type": "tmpfs"},
            "mounts[7].destination: 7: must be a string, not number",
        ),
    ],
)
def test_mount_refusals(fields: dict[str, Any], message: str) -> None:
    refused(mount(**fields), "config.json: " + message)


def test_masked_and_readonly_paths() -> None:
    refused(
        with_("linux.maskedPaths[10]", "proc/kcore"),
        "config.json: linux.maskedPaths[10]:"
        " 'proc/kcore': must be an absolute path inside the container",
    )
    refused(
        with_("linux.maskedPaths[10]", "/proc/kcore"),
        "config.json: linux.maskedPaths[10]: '/proc/kcore': already linux.maskedPaths[2]",
    )
    refused(
        with_("linux.readonlyPaths[5]", "/proc/../etc"),
        "config.json: linux.readonlyPaths[5]: '/proc/../etc': must not contain '..'",
    )
    refused(
        with_("linux.readonlyPaths[0]", "/"),
        "config.json: linux.readonlyPaths[0]: '/': must name a path below /",
    )


def test_empty_linux_section() -> None:
    data = base()
    data["linux"] = {}
    del data["hostname"]
    c = parse_config(data, BUNDLE)
    assert c.namespaces == () and c.masked_paths == () and c.hostname is None
    assert os.path.isabs(c.root)
