"""User volumes (``-v SRC:DST[:ro|rw]``) and safe path resolution inside a root filesystem.

A volume's destination is a path *inside* the container, but until pivot_root it is looked up
from the host, through a root filesystem the user (or an image) controls. A symlink there
(``rootfs/mnt -> /etc``) must not make a mount land on the host: ``resolve_in_root`` follows
symlinks as the kernel would if ``root`` were "/" (the scheme of cyphar/filepath-securejoin,
which runc uses), so every mount target stays inside the root filesystem.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

VOLUME_FORM = "SRC:DST[:ro|rw] (SRC an existing absolute host path, DST an absolute path)"
VOLUME_OPTIONS = ("ro", "rw")

# securejoin's limit; the kernel's own is 40 per lookup.
MAX_SYMLINKS = 255


class VolumeError(ValueError):
    """A ``-v`` argument that is not SRC:DST[:ro|rw] or names an unusable path."""


@dataclass(frozen=True)
class Volume:
    """A host path bind-mounted into the container (recursively, as docker's ``-v`` does)."""

    source: str  # absolute host path, normalised
    destination: str  # absolute container path, normalised, no ".." components
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.destination}:{'ro' if self.read_only else 'rw'}"


def _bad(spec: str, why: str) -> VolumeError:
    return VolumeError(f"volume {spec!r}: {why}; expected {VOLUME_FORM}")


def _clean_destination(spec: str, dst: str) -> str:
    if not dst.startswith("/"):
        raise _bad(spec, f"destination {dst!r} is not an absolute path")
    parts = [p for p in dst.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _bad(spec, f"destination {dst!r} contains '..'")
    if not parts:
        raise _bad(spec, "destination cannot be '/'")
    # runc refuses mounts on or under /proc (checkProcMount): they could hide or replace
    # the kernel's files there, and a fresh procfs is mounted at /proc anyway.
    if parts[0] == "proc":
        raise _bad(spec, f"destination {dst!r} is /proc or inside it")
    return "/" + "/".join(parts)


def parse_volume(spec: str) -> Volume:
    """Parse one ``-v`` value; the source must exist now (it is bind-mounted as it is)."""
    fields = spec.split(":")
    if len(fields) not in (2, 3):
        raise _bad(spec, f"{len(fields)} ':'-separated fields, not 2 or 3")
    src, dst = fields[0], fields[1]
    option = fields[2] if len(fields) == 3 else "rw"
    if option not in VOLUME_OPTIONS:
        raise _bad(spec, f"unknown option {option!r} (allowed: {', '.join(VOLUME_OPTIONS)})")
    if not src.startswith("/"):
        raise _bad(spec, f"source {src!r} is not an absolute host path")
    source = os.path.normpath(src)
    if not os.path.exists(source):
        raise _bad(spec, f"source {source!r} does not exist")
    return Volume(source, _clean_destination(spec, dst), read_only=option == "ro")


def parse_volumes(specs: Iterable[str]) -> tuple[Volume, ...]:
    """Parse every ``-v`` value; two volumes on one destination are an error."""
    volumes: list[Volume] = []
    seen: dict[str, str] = {}
    for spec in specs:
        volume = parse_volume(spec)
        if volume.destination in seen:
            raise _bad(
                spec,
                f"destination {volume.destination!r} is also used by {seen[volume.destination]!r}",
            )
        seen[volume.destination] = spec
        volumes.append(volume)
    return tuple(volumes)


def resolve_in_root(root: str, path: str, *, follow: bool = True) -> str:
    """The host path of container path ``path``, every symlink resolved inside ``root``.

    Like the kernel's lookup with ``root`` as "/" (securejoin's SecureJoin): an absolute
    link target restarts at ``root``, ".." never climbs above it, a loop or a chain of more
    than MAX_SYMLINKS links fails with ELOOP. Components that do not exist yet are kept as
    they are, so the result can be created; the caller must create and open it before any
    untrusted process can swap a component for a symlink. With ``follow=False`` the last
    component is not followed (for a path about to be created, unlinked or symlinked).
    """
    root = os.path.abspath(root)
    if not follow:
        parent, _, name = path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            raise ValueError(f"{path!r} does not end in a file name")
        return os.path.join(resolve_in_root(root, parent or "/"), name)
    pending = deque(path.split("/"))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(
                errno.ELOOP,
                f"more than {MAX_SYMLINKS} symlinks resolving {path!r} in {root}",
                candidate,
            )
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved.clear()
        pending.extendleft(reversed(target.split("/")))
    return os.path.join(root, *resolved)
