"""An OCI config's ``mounts`` carried out in runc's order (libcontainer/rootfs_linux.go).

    prepare_root -> each mount in the order given (mountToRootfs) -> /dev nodes when /dev is
    a tmpfs (runc's needsSetupDev) -> pivot_root; then, in container_main after hostname and
    sysctl: readonlyPaths, maskedPaths, root.readonly (finalizeRootfs)

Options are parsed as runc's parseMountOptions: the mount(2) flags it knows (set or, for
"rw", "suid", "dev", "exec", ..., cleared), propagation flags applied after the mount
(mount(NULL, dest, NULL, MS_SHARED...)), everything else joined with "," as the data
string. A bind mount ("bind"/"rbind" in the options, or type "bind") with other flags
(ro, nosuid, nodev, noexec, atime) is remounted with MS_BIND|MS_REMOUNT, as the kernel
ignores them on the bind itself. Type "cgroup" mounts cgroup2: corral's containers live
in the cgroup2 hierarchy.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from runtime import syscalls as sc
from runtime.container.devices import populate_dev
from runtime.container.mounts import (
    MountStep,
    apply_mounts,
    locked_flags,
    mount_at,
    pivot_into,
    prepare_root,
)
from runtime.container.volumes import resolve_in_root

MS_SYNCHRONOUS = 16
MS_MANDLOCK = 64
MS_DIRSYNC = 128
# option -> (clear the flag instead of setting it, flag): runc's parseMountOptions table.
FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# Flags a bind mount only gets through a remount (mount(2): MS_BIND ignores the others).
_REMOUNTED = (
    sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME
    | sc.MS_RELATIME | sc.MS_STRICTATIME
)  # fmt: skip
PTS_GID = ",gid=5"


@dataclass(frozen=True)
class OciMountPlan:
    """One ``mounts`` entry as mount(2) sees it; ``source`` absolute for a bind."""

    destination: str
    fstype: str | None  # None: a bind mount
    source: str
    flags: int
    propagation: tuple[int, ...]
    data: str


def parse_options(options: tuple[str, ...]) -> tuple[int, tuple[int, ...], str]:
    """(flags, propagation flags, data) of a mount's options, as runc parses them."""
    flags, propagation, data = 0, [], []
    for option in options:
        if option in FLAGS:
            clear, flag = FLAGS[option]
            flags = flags & ~flag if clear else flags | flag
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        else:
            data.append(option)
    return flags, tuple(propagation), ",".join(data)


def plan(
    destination: str, fstype: str | None, source: str | None, options: tuple[str, ...], bundle: str
) -> OciMountPlan:
    """The plan of one OCI mount; a bind's relative source is relative to the bundle."""
    flags, propagation, data = parse_options(options)
    if fstype == "bind" or flags & sc.MS_BIND:
        src = source or ""
        src = src if os.path.isabs(src) else os.path.join(bundle, src)
        return OciMountPlan(destination, None, src, flags | sc.MS_BIND, propagation, data)
    kind = "cgroup2" if fstype == "cgroup" else fstype
    return OciMountPlan(destination, kind, source or kind or "none", flags, propagation, data)


def mount_one(rootfs: str, step: OciMountPlan, *, userns: bool) -> None:
    """mountToRootfs for one entry, under the real path ``rootfs``."""
    if step.fstype is None:
        dest = _bind(rootfs, step)
    else:
        # devpts with gid=5 is EINVAL when gid 5 is unmapped (runc's rootless spec drops it);
        # sysfs needs the user namespace to own the net namespace, else /sys is bound.
        retry = step.data.replace(PTS_GID, "") if step.fstype == "devpts" and userns else None
        fallback = "/sys" if step.fstype == "sysfs" and userns else None
        mount_step = MountStep(
            step.destination, step.source, step.fstype, step.flags, step.data,
            retry_data=retry, fallback_bind=fallback,
        )  # fmt: skip
        apply_mounts(rootfs, [mount_step])
        dest = resolve_in_root(rootfs, step.destination)
    for flag in step.propagation:
        sc.mount(None, dest, None, flag)


def _bind(rootfs: str, step: OciMountPlan) -> str:
    if not os.path.exists(step.source):
        raise OSError(errno.ENOENT, f"bind mount source {step.source} does not exist", step.source)
    dest = resolve_in_root(rootfs, step.destination)
    if not os.path.lexists(dest):
        if os.path.isdir(step.source):
            os.makedirs(dest, mode=0o755)
        else:
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
    mount_at(dest, step.source, None, step.flags & (sc.MS_BIND | sc.MS_REC))
    extra = step.flags & _REMOUNTED
    if extra:
        flags = sc.MS_BIND | sc.MS_REMOUNT | extra | locked_flags(dest)
        try:
            sc.mount(None, dest, None, flags)
        except OSError as e:
            why = f"remount bind {dest} (flags {flags:#x}): {os.strerror(e.errno or 0)}"
            raise OSError(e.errno, why, dest) from None
    return dest


def needs_dev(steps: tuple[OciMountPlan, ...]) -> bool:
    """runc's needsSetupDev: /dev gets its nodes unless it is bind-mounted from the host."""
    return not any(s.destination.rstrip("/") == "/dev" and s.fstype is None for s in steps)


def setup_rootfs(rootfs: str, steps: tuple[OciMountPlan, ...], *, userns: bool) -> None:
    """Everything before pivot_root, then pivot_root; the caller is in its mount ns."""
    rootfs = os.path.realpath(rootfs)
    prepare_root(rootfs)
    for step in steps:
        mount_one(rootfs, step, userns=userns)
    if needs_dev(steps):
        populate_dev(rootfs, userns=userns)
    pivot_into(rootfs)


def write_sysctl(sysctl: dict[str, str]) -> None:
    """linux.sysctl: each key (dots as slashes) under /proc/sys, in the new namespaces."""
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise OSError(e.errno, f"sysctl {key}={value!r}: {e.strerror}", path) from None
