"""root, mounts, linux.maskedPaths and linux.readonlyPaths of config.json (runtime-spec
config.md "Root" and "Mounts", config-linux.md "Masked Paths" and "Readonly Paths").

Paths are checked lexically, before anything exists: a relative root.path or bind source is
joined to the bundle and must stay inside it after '..' is resolved (load_bundle then checks
the real path, symlinks followed). Destinations must be absolute (runc 1.1 still accepts a
relative one with a warning; the spec says absolute) and each may be given once.

Mount options are mount(2) flags (MOUNT_FLAGS, runc's and crun's table), propagation flags
(PROPAGATION) or filesystem data passed to the kernel as is ("mode=755", "newinstance"); the
kernel refuses data it does not know with EINVAL at mount time. idmapped mounts (options
idmap/ridmap, uidMappings/gidMappings on a mount) are refused.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

from runtime.oci.fields import (
    MISSING,
    OciConfigError,
    array,
    boolean,
    check_keys,
    join,
    obj,
    string,
    strings,
)

# name -> (clear, flag): "ro" sets MS_RDONLY, "rw" clears it (<sys/mount.h> values).
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, 1), "rw": (True, 1),
    "nosuid": (False, 2), "suid": (True, 2),
    "nodev": (False, 4), "dev": (True, 4),
    "noexec": (False, 8), "exec": (True, 8),
    "sync": (False, 16), "async": (True, 16),
    "remount": (False, 32),
    "mand": (False, 64), "nomand": (True, 64),
    "dirsync": (False, 128),
    "noatime": (False, 1024), "atime": (True, 1024),
    "nodiratime": (False, 2048), "diratime": (True, 2048),
    "bind": (False, 4096), "rbind": (False, 4096 | 16384),
    "relatime": (False, 1 << 21), "norelatime": (True, 1 << 21),
    "strictatime": (False, 1 << 24), "nostrictatime": (True, 1 << 24),
}  # fmt: skip
PROPAGATION: dict[str, int] = {
    "private": 1 << 18, "rprivate": (1 << 18) | 16384,
    "slave": 1 << 19, "rslave": (1 << 19) | 16384,
    "shared": 1 << 20, "rshared": (1 << 20) | 16384,
    "unbindable": 1 << 17, "runbindable": (1 << 17) | 16384,
}  # fmt: skip
MOUNT_TYPES = ("bind", "cgroup", "cgroup2", "devpts", "mqueue", "none", "proc", "sysfs", "tmpfs")
_IDMAP = "idmapped mounts are not supported by corral"
_REFUSED_OPTIONS = {
    "idmap": _IDMAP,
    "ridmap": _IDMAP,
    "tmpcopyup": "crun's tmpcopyup is not supported by corral",
    "copy-symlink": "crun's copy-symlink is not supported by corral",
}


@dataclass(frozen=True)
class OciMount:
    """One entry of mounts, in the order given. ``source`` of a bind mount is absolute (a
    relative one joined to the bundle); ``bind`` says whether it is one (type "bind" or a
    bind/rbind option)."""

    destination: str
    type: str | None
    source: str | None
    options: tuple[str, ...]

    @property
    def bind(self) -> bool:
        return self.type == "bind" or bool({"bind", "rbind"} & set(self.options))


def inside(bundle: str, relative: str) -> str | None:
    """``bundle``/``relative`` with '.' and '..' resolved, or None when that leaves the
    bundle ("rootfs/../../etc")."""
    base = posixpath.normpath(os.path.abspath(bundle))
    full = posixpath.normpath(posixpath.join(base, relative))
    return full if full == base or full.startswith(base.rstrip("/") + "/") else None


def parse_root(value: object, bundle: str) -> tuple[str, bool]:
    """root -> (absolute path, readonly)."""
    root = obj(value, "root")
    check_keys(root, "root", ("path", "readonly"), {})
    path = string(root.get("path", MISSING), "root.path", empty=False)
    readonly = boolean(root.get("readonly", False), "root.readonly")
    if posixpath.isabs(path):
        return posixpath.normpath(path), readonly
    full = inside(bundle, path)
    if full is None:
        raise OciConfigError(
            "root.path", path, f"a relative path must stay inside the bundle {bundle}"
        )
    if full == posixpath.normpath(os.path.abspath(bundle)):
        raise OciConfigError(
            "root.path", path, "must name a directory inside the bundle, not the bundle itself"
        )
    return full, readonly


def container_path(value: object, path: str) -> str:
    """An absolute path inside the container, without '..' (normalised: "/a//b/" -> "/a/b")."""
    text = string(value, path, empty=False)
    if not text.startswith("/"):
        raise OciConfigError(path, text, "must be an absolute path inside the container")
    if ".." in text.split("/"):
        raise OciConfigError(path, text, "must not contain '..'")
    return posixpath.normpath(text)


def parse_mounts(value: object, bundle: str) -> tuple[OciMount, ...]:
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(array(value, "mounts")):
        mount = _mount(item, join("mounts", i), bundle)
        if mount.destination in seen:
            raise OciConfigError(
                join(join("mounts", i), "destination"),
                mount.destination,
                f"already the destination of mounts[{seen[mount.destination]}]; "
                "each destination may be mounted once",
            )
        seen[mount.destination] = i
        out.append(mount)
    return tuple(out)


def _mount(value: object, path: str, bundle: str) -> OciMount:
    data: dict[str, Any] = obj(value, path)
    refused = {"uidMappings": _IDMAP, "gidMappings": _IDMAP}
    check_keys(data, path, ("destination", "type", "source", "options"), refused)
    destination = container_path(data.get("destination", MISSING), join(path, "destination"))
    if destination == "/":
        raise OciConfigError(
            join(path, "destination"), destination, "the root is root.path; mount below it"
        )
    kind = data.get("type")
    if kind is not None and string(kind, join(path, "type")) not in MOUNT_TYPES:
        raise OciConfigError(join(path, "type"), kind, f"allowed {', '.join(MOUNT_TYPES)}")
    options = strings(data.get("options", []), join(path, "options"))
    for j, option in enumerate(options):
        if option in _REFUSED_OPTIONS:
            raise OciConfigError(join(join(path, "options"), j), option, _REFUSED_OPTIONS[option])
    source = data.get("source")
    if source is not None:
        source = string(source, join(path, "source"), empty=False)
    mount = OciMount(destination, kind, source, options)
    if mount.bind:
        bind_source = _bind_source(source, join(path, "source"), bundle)
        return OciMount(destination, kind, bind_source, options)
    if kind is None or kind in ("bind", "none"):
        raise OciConfigError(
            join(path, "type"),
            kind if kind is not None else MISSING,
            f"give a filesystem type ({', '.join(MOUNT_TYPES[1:])}) or a bind/rbind option",
        )
    return mount


def _bind_source(source: str | None, path: str, bundle: str) -> str:
    if source is None:
        raise OciConfigError(path, MISSING, "a bind mount needs a source path")
    if posixpath.isabs(source):
        return posixpath.normpath(source)
    full = inside(bundle, source)
    if full is None:
        raise OciConfigError(
            path, source, f"a relative source must stay inside the bundle {bundle}"
        )
    return full


def parse_paths(value: object, path: str) -> tuple[str, ...]:
    """linux.maskedPaths / linux.readonlyPaths: absolute container paths, each once."""
    out: list[str] = []
    for i, item in enumerate(array(value, path)):
        entry = container_path(item, join(path, i))
        if entry == "/":
            raise OciConfigError(join(path, i), item, "must name a path below /")
        if entry in out:
            raise OciConfigError(join(path, i), item, f"already {path}[{out.index(entry)}]")
        out.append(entry)
    return tuple(out)
