"""linux.namespaces, uid/gid mappings, timeOffsets, sysctl, cgroupsPath and devices of
config.json (runtime-spec config-linux.md).

- namespaces: the eight types, each at most once; ``path`` joins an existing namespace and
  must be a namespace file of that type: statfs(2) says nsfs and ioctl(NS_GET_NSTYPE) the
  CLONE_NEW* flag of the type (ioctl_ns(2)).
- uidMappings/gidMappings: needed exactly when a new user namespace is made (runc's rule),
  at most 340 lines each (user_namespaces(7), since 4.15), no two lines overlapping on the
  container or the host side (the kernel refuses the map with EINVAL).
- timeOffsets: needs a new time namespace; seconds int64, nanoseconds 0..999999999.
- sysctl: only namespaced keys, each needing the namespace that makes it private: net.*
  a new network ns, the IPC ones (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) a new
  ipc ns, kernel.domainname a new uts ns (kernel.hostname: use the hostname field).
- cgroupsPath: corral's cgroupfs form, "a/b" or "/a/b" under the cgroup2 root, no '.' or
  '..' components; systemd's "slice:prefix:name" form is refused.
- devices: corral creates the default devices (runc's list) and no others, so only entries
  denying everything ({"allow": false, "access": "rwm"}, what runc spec and umoci write) are
  accepted; linux.resources.devices likewise.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from typing import Any

from runtime import syscalls
from runtime.container.spec import TimeOffsets
from runtime.container.userns import MAX_ID, MAX_MAP_LINES, IdMap
from runtime.oci.fields import (
    INT64_MAX,
    INT64_MIN,
    MISSING,
    OciConfigError,
    array,
    boolean,
    check_keys,
    integer,
    join,
    obj,
    string,
    string_map,
)

NSFS_MAGIC = 0x6E736673  # <linux/magic.h>
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), <linux/nsfs.h>
# type -> CLONE_NEW* (<linux/sched.h>), what NS_GET_NSTYPE returns for a file of that type.
NAMESPACE_TYPES: dict[str, int] = {
    "pid": 0x20000000, "network": 0x40000000, "ipc": 0x08000000, "uts": 0x04000000,
    "mount": 0x00020000, "user": 0x10000000, "cgroup": 0x02000000, "time": 0x00000080,
}  # fmt: skip
IPC_SYSCTLS = frozenset(
    ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
     "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
)  # fmt: skip
_SYSCTL_KEY = re.compile(r"[a-z0-9_-]+(\.[A-Za-z0-9_-]+)+")
_CGROUP_PART = re.compile(r"[A-Za-z0-9_.@+-]+")


@dataclass(frozen=True)
class OciNamespace:
    """One entry of linux.namespaces: a new namespace (path None) or one joined by path."""

    type: str  # pid, network, ipc, uts, mount, user, cgroup, time
    path: str | None = None


def parse_namespaces(value: object) -> tuple[OciNamespace, ...]:
    out: list[OciNamespace] = []
    where = "linux.namespaces"
    for i, item in enumerate(array(value, where)):
        path = join(where, i)
        data = obj(item, path)
        check_keys(data, path, ("type", "path"), {})
        kind = string(data.get("type", MISSING), join(path, "type"))
        if kind not in NAMESPACE_TYPES:
            raise OciConfigError(join(path, "type"), kind, f"allowed {', '.join(NAMESPACE_TYPES)}")
        for j, earlier in enumerate(out):
            if earlier.type == kind:
                raise OciConfigError(
                    join(path, "type"), kind, f"already {where}[{j}]; each type may be given once"
                )
        ns_path = data.get("path")
        if ns_path is not None:
            ns_path = string(ns_path, join(path, "path"))
            if ns_path == "":
                ns_path = None  # the spec: an empty path means a new namespace
            else:
                check_namespace_file(ns_path, kind, join(path, "path"))
        out.append(OciNamespace(kind, ns_path))
    return tuple(out)


def check_namespace_file(path: str, kind: str, where: str) -> None:
    """``path`` must be an nsfs file (/proc/PID/ns/TYPE or a bind mount of one) of ``kind``."""
    if not os.path.isabs(path):
        raise OciConfigError(where, path, "must be an absolute path like /proc/PID/ns/" + kind)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OciConfigError(
            where,
            path,
            f"cannot be opened ({e.strerror}); expected a "
            f"{kind} namespace file like /proc/PID/ns/{kind}",
        ) from None
    try:
        magic = syscalls.statfs_type(f"/proc/self/fd/{fd}")
        if magic != NSFS_MAGIC:
            raise OciConfigError(
                where,
                path,
                f"is not a namespace file (statfs type {magic:#x}, nsfs is {NSFS_MAGIC:#x})",
            )
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    finally:
        os.close(fd)
    if nstype != NAMESPACE_TYPES[kind]:
        names = {flag: name for name, flag in NAMESPACE_TYPES.items()}
        raise OciConfigError(
            where, path, f"is a {names.get(nstype, hex(nstype))} namespace, not a {kind} namespace"
        )


def parse_mappings(value: object, where: str) -> tuple[IdMap, ...]:
    """linux.uidMappings / linux.gidMappings: containerID, hostID, size (uint32 each)."""
    maps: list[IdMap] = []
    items = array(value, where)
    if len(items) > MAX_MAP_LINES:
        raise OciConfigError(where, f"{len(items)} lines", f"at most {MAX_MAP_LINES} lines")
    for i, item in enumerate(items):
        path = join(where, i)
        data = obj(item, path)
        check_keys(data, path, ("containerID", "hostID", "size"), {})
        ids = [
            integer(data.get(k, MISSING), join(path, k), 0, MAX_ID)
            for k in ("containerID", "hostID")
        ]
        size = integer(data.get("size", MISSING), join(path, "size"), 1, MAX_ID + 1)
        for side, start in zip(("containerID", "hostID"), ids, strict=True):
            if start + size - 1 > MAX_ID:
                raise OciConfigError(path, data, f"{side} + size - 1 must be at most {MAX_ID}")
        mapping = IdMap(ids[0], ids[1], size)
        for j, other in enumerate(maps):
            for side in ("container", "host"):
                a, b = getattr(mapping, side), getattr(other, side)
                if a < b + other.size and b < a + mapping.size:
                    raise OciConfigError(
                        path,
                        data,
                        f"overlaps {where}[{j}] on the {side} side; ranges must be disjoint",
                    )
        maps.append(mapping)
    return tuple(maps)


def parse_time_offsets(value: object) -> TimeOffsets:
    where = "linux.timeOffsets"
    data = obj(value, where)
    check_keys(data, where, ("monotonic", "boottime"), {})
    ns = {}
    for clock in ("monotonic", "boottime"):
        if clock not in data:
            ns[clock] = 0
            continue
        path = join(where, clock)
        entry = obj(data[clock], path)
        check_keys(entry, path, ("secs", "nanosecs"), {})
        secs = integer(entry.get("secs", 0), join(path, "secs"), INT64_MIN, INT64_MAX)
        nanos = integer(entry.get("nanosecs", 0), join(path, "nanosecs"), 0, 999_999_999)
        ns[clock] = secs * 1_000_000_000 + nanos
    return TimeOffsets(monotonic_ns=ns["monotonic"], boottime_ns=ns["boottime"])


def parse_sysctl(value: object, new_namespaces: set[str]) -> dict[str, str]:
    where = "linux.sysctl"
    out = string_map(value, where)
    for key in out:
        path = join(where, key)
        if not _SYSCTL_KEY.fullmatch(key):
            raise OciConfigError(path, key, "a sysctl name like net.ipv4.ip_forward")
        need = _sysctl_namespace(key)
        if need is None:
            raise OciConfigError(
                path,
                key,
                "not a namespaced sysctl; allowed net.*, "
                "fs.mqueue.*, kernel.domainname and the IPC ones ("
                + ", ".join(sorted(IPC_SYSCTLS))
                + ")",
            )
        if need not in new_namespaces:
            raise OciConfigError(
                path,
                key,
                f"needs a new {need} namespace in linux.namespaces"
                " (else it would change the host's)",
            )
    return out


def _sysctl_namespace(key: str) -> str | None:
    if key.startswith("net."):
        return "network"
    if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return "ipc"
    if key == "kernel.domainname":
        return "uts"
    return None


def parse_cgroups_path(value: object) -> str:
    where = "linux.cgroupsPath"
    text = string(value, where, empty=False)
    if ":" in text:
        raise OciConfigError(
            where,
            text,
            "systemd's slice:prefix:name form is not supported; give a path like corral/NAME",
        )
    parts = text.strip("/").split("/")
    for part in parts:
        if part in ("", ".", "..") or not _CGROUP_PART.fullmatch(part):
            raise OciConfigError(
                where,
                text,
                "a path like corral/NAME: components of letters, "
                "digits and ._@+-, no empty, '.' or '..' component",
            )
    return text


def check_devices(value: object, where: str) -> None:
    """Only deny-all entries: corral gives the container runc's default devices, no others."""
    for i, item in enumerate(array(value, where)):
        path = join(where, i)
        data: dict[str, Any] = obj(item, path)
        check_keys(data, path, ("allow", "access", "type", "major", "minor"), {})
        allow = boolean(data.get("allow", MISSING), join(path, "allow"))
        deny_all = (
            not allow
            and data.get("type", "a") == "a"
            and "major" not in data
            and "minor" not in data
            and set(string(data.get("access", "rwm"), join(path, "access"))) == set("rwm")
        )
        if not deny_all:
            raise OciConfigError(
                path,
                data,
                "corral gives containers the default devices "
                "(null, zero, full, random, urandom, tty, ptmx) and no others;"
                ' only {"allow": false, "access": "rwm"} is accepted here',
            )
