"""config.json of an OCI bundle -> OciConfig, typed and validated (opencontainers/runtime-spec
config.md and config-linux.md, spec 1.0.x-1.1).

Supported (parsed, types and ranges checked; the details live beside each part):
  ociVersion (1.x), root (path, readonly), mounts (mounts.py), process (process.py: args,
  env, cwd, user uid/gid/umask/additionalGids, capabilities, rlimits, noNewPrivileges,
  terminal false), hostname (needs a new uts namespace), annotations, linux.namespaces /
  uidMappings / gidMappings / timeOffsets / sysctl / cgroupsPath / devices (deny-all only)
  (linux.py), linux.resources (resources.py), linux.maskedPaths, linux.readonlyPaths.
Refused, naming the field (corral cannot honour them, and ignoring one would run something
other than what the config says): process.terminal true, consoleSize, apparmorProfile,
selinuxLabel, oomScoreAdj, ioPriority, scheduler, execCPUAffinity; hooks; domainname;
linux.devices, seccomp (corral applies its own default profile), rootfsPropagation,
mountLabel, intelRdt, personality, memoryPolicy, netDevices, the other platforms' sections.
A refused field that is present but empty (null, false, "", [], {}) asks for nothing and is
accepted. Fields the spec does not define are refused too (the spec asks runtimes to ignore
them; corral prefers to name a typo than to ignore it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.container.limits import ContainerLimits
from runtime.container.spec import TimeOffsets
from runtime.container.userns import IdMap
from runtime.oci.fields import MISSING, OciConfigError, check_keys, obj, string, string_map
from runtime.oci.linux import (
    OciNamespace,
    parse_cgroups_path,
    parse_mappings,
    parse_namespaces,
    parse_sysctl,
    parse_time_offsets,
)
from runtime.oci.mounts import OciMount, parse_mounts, parse_paths, parse_root
from runtime.oci.process import OciCapabilities, OciProcess, parse_process
from runtime.oci.resources import parse_resources

__all__ = [
    "OciCapabilities",
    "OciConfig",
    "OciConfigError",
    "OciMount",
    "OciNamespace",
    "load_bundle",
    "parse_config",
]

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config.json is a few KiB; refuse to read gigabytes
HOSTNAME_MAX = 64  # HOST_NAME_MAX: sethostname(2) refuses longer with EINVAL
_NO = "is not supported by corral"
TOP_REFUSED = {
    "hooks": f"hooks {_NO}",
    "domainname": f"{_NO}; leave it out",
    "solaris": "is for Solaris", "windows": "is for Windows", "vm": "is for VM-based runtimes",
    "zos": "is for z/OS",
}  # fmt: skip
LINUX_REFUSED = {
    "devices": "corral creates only the default devices (runc's list); leave it out",
    "seccomp": "corral applies its own default seccomp profile; leave it out",
    "rootfsPropagation": f"{_NO}; the rootfs is private",
    "mountLabel": f"SELinux {_NO}",
    "intelRdt": f"Intel RDT {_NO}",
    "personality": f"{_NO}; leave it out",
    "memoryPolicy": f"{_NO}; leave it out",
    "netDevices": f"{_NO}; leave it out",
}
LINUX_SUPPORTED = ("namespaces", "uidMappings", "gidMappings", "timeOffsets", "resources",
                   "cgroupsPath", "sysctl", "maskedPaths", "readonlyPaths")  # fmt: skip
TOP_SUPPORTED = ("ociVersion", "root", "mounts", "process", "hostname", "annotations", "linux")


@dataclass(frozen=True)
class OciConfig:
    """A validated config.json; field names follow the spec's, in snake case."""

    oci_version: str
    root: str  # absolute (a relative root.path joined to the bundle)
    root_readonly: bool
    process: OciProcess  # args, env, cwd, user, capabilities, rlimits, ... (process.py)
    hostname: str | None
    mounts: tuple[OciMount, ...]
    namespaces: tuple[OciNamespace, ...]
    uid_mappings: tuple[IdMap, ...]
    gid_mappings: tuple[IdMap, ...]
    time_offsets: TimeOffsets | None
    limits: ContainerLimits  # from linux.resources (resources.py)
    unified: Mapping[str, str]  # linux.resources.unified, verbatim
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    cgroups_path: str | None
    annotations: Mapping[str, str]
    sysctl: Mapping[str, str]
    # linux.resources values ContainerLimits has no field for: cgroup v2 file -> value
    # (memory.low, memory.max "max", memory.swap.max, cpuset.mems, io.weight), written like
    # unified, before it.
    resource_files: Mapping[str, str] = field(default_factory=dict)

    def namespace(self, kind: str) -> OciNamespace | None:
        """The entry of linux.namespaces of type ``kind``; None: the host's is shared."""
        return next((ns for ns in self.namespaces if ns.type == kind), None)


def load_bundle(bundle: str) -> OciConfig:
    """BUNDLE/config.json -> OciConfig. The root must be an existing directory, and a
    relative root.path must stay inside the bundle with symlinks followed too."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise OciConfigError("(file)", path, f"cannot be read: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise OciConfigError("(file)", path, f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except OciConfigError:
        raise
    except (ValueError, RecursionError) as e:
        raise OciConfigError("(file)", path, f"not valid JSON: {e}") from None
    config = parse_config(data, bundle)
    _check_root_on_disk(config, data, bundle)
    return config


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys; two values for one field are refused."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise OciConfigError("(file)", key, "a key given twice in one object")
        out[key] = value
    return out


def _check_root_on_disk(config: OciConfig, data: dict[str, Any], bundle: str) -> None:
    given = data["root"]["path"]
    if not os.path.isdir(config.root):
        raise OciConfigError("root.path", given, f"{config.root} is not a directory")
    if not os.path.isabs(given):
        real, base = os.path.realpath(config.root), os.path.realpath(bundle)
        if not real.startswith(base.rstrip("/") + "/"):
            raise OciConfigError(
                "root.path",
                given,
                f"resolves to {real} (symlinks followed), outside the bundle {base}; "
                "give an absolute path instead",
            )


def parse_config(data: object, bundle: str) -> OciConfig:
    """The decoded JSON of config.json -> OciConfig; OciConfigError on anything refused."""
    top = obj(data, "(top level)")
    check_keys(top, "", TOP_SUPPORTED, TOP_REFUSED)
    version = string(top.get("ociVersion", MISSING), "ociVersion")
    if not version.startswith("1."):
        raise OciConfigError("ociVersion", version, "a runtime-spec version 1.x like 1.0.2")
    root, root_readonly = parse_root(top.get("root", MISSING), bundle)
    process = parse_process(top.get("process", MISSING))
    linux = obj(top.get("linux", {}), "linux")
    check_keys(linux, "linux", LINUX_SUPPORTED, LINUX_REFUSED)
    namespaces = parse_namespaces(linux.get("namespaces", []))
    new = {ns.type for ns in namespaces if ns.path is None}
    resources = parse_resources(linux.get("resources", {}))
    uid_maps, gid_maps = _mappings(linux, "user" in new)
    time_offsets = None
    if linux.get("timeOffsets") is not None:
        time_offsets = parse_time_offsets(linux["timeOffsets"])
        _needs(new, "time", "linux.timeOffsets", linux["timeOffsets"])
    cgroups_path = linux.get("cgroupsPath")
    return OciConfig(
        oci_version=version, root=root, root_readonly=root_readonly,
        process=process,
        hostname=_hostname(top.get("hostname"), new),
        mounts=parse_mounts(top.get("mounts", []), bundle),
        namespaces=namespaces, uid_mappings=uid_maps, gid_mappings=gid_maps,
        time_offsets=time_offsets, limits=resources.limits, unified=resources.unified,
        masked_paths=parse_paths(linux.get("maskedPaths", []), "linux.maskedPaths"),
        readonly_paths=parse_paths(linux.get("readonlyPaths", []), "linux.readonlyPaths"),
        cgroups_path=None if cgroups_path is None else parse_cgroups_path(cgroups_path),
        annotations=string_map(top.get("annotations", {}), "annotations"),
        sysctl=parse_sysctl(linux.get("sysctl", {}), new),
        resource_files=resources.files,
    )  # fmt: skip


def _needs(new: set[str], kind: str, where: str, value: object) -> None:
    if kind not in new:
        raise OciConfigError(
            where,
            value,
            f'needs a new {kind} namespace in linux.namespaces (add {{"type": "{kind}"}})',
        )


def _hostname(value: object, new: set[str]) -> str | None:
    if value is None or value == "":
        return None  # runc and crun leave the hostname alone when it is empty
    name = string(value, "hostname")
    if len(name.encode()) > HOSTNAME_MAX:
        raise OciConfigError("hostname", name, f"at most {HOSTNAME_MAX} bytes (HOST_NAME_MAX)")
    # runc: "unable to set hostname without a private UTS namespace"
    _needs(new, "uts", "hostname", name)
    return name


def _mappings(linux: dict[str, Any], new_user: bool) -> tuple[tuple[IdMap, ...], ...]:
    maps = tuple(
        parse_mappings(linux.get(key, []), f"linux.{key}") for key in ("uidMappings", "gidMappings")
    )
    for key, lines in zip(("uidMappings", "gidMappings"), maps, strict=True):
        if new_user and not lines:
            raise OciConfigError(
                f"linux.{key}",
                linux.get(key, MISSING),
                "a new user namespace needs mappings (containerID, hostID, size)",
            )
        if lines and not new_user:
            raise OciConfigError(
                f"linux.{key}",
                linux[key],
                'mappings need a new user namespace in linux.namespaces (add {"type": "user"})',
            )
    return maps
