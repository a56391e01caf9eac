"""The container's filesystem: the mount plan, its execution, pivot_root, masked and ro paths.

What runc does (libcontainer/rootfs_linux.go prepareRoot, mountToRootfs, pivotRoot,
finalizeRootfs, readonlyPath, maskPath) with docker's default mounts, for a process that is
already alone in new mount, pid, net, ipc, uts and cgroup namespaces (and maybe a user one):

    setup_filesystem(spec) = prepare_root -> apply_mounts(plan_mounts(spec)) -> populate_dev
                             -> pivot_into -> make_root_readonly? -> readonly_paths -> mask_paths

``plan_mounts`` is pure data (what goes where, with flags and data), so it can be tested and
shown by ``corral inspect``; the rest are thin executors over mount(2).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Literal

from runtime import syscalls as sc
from runtime.cgroupfs.mounts import read_mountinfo
from runtime.container.devices import populate_dev
from runtime.container.volumes import Volume, resolve_in_root

# runc's defaults (libcontainer/specconv/example.go), which docker and podman also use.
DEFAULT_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_SAFE = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
# The flags a less privileged mount namespace inherits locked (MNT_LOCK_*): a
# MS_BIND|MS_REMOUNT that would clear one fails with EPERM in a user namespace.
_LOCKABLE = ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC))
_FLAG_NAMES = (
    (sc.MS_BIND, "bind"),
    (sc.MS_REC, "rec"),
    (sc.MS_NOSUID, "nosuid"),
    (sc.MS_NODEV, "nodev"),
    (sc.MS_NOEXEC, "noexec"),
    (sc.MS_STRICTATIME, "strictatime"),
    (sc.MS_RELATIME, "relatime"),
    (sc.MS_NOATIME, "noatime"),
)


@dataclass(frozen=True)
class MountSpec:
    """What the container's filesystem is made of; ``userns``: set up inside a user ns."""

    rootfs: str
    volumes: tuple[Volume, ...] = ()
    read_only: bool = False
    userns: bool = False
    masked_paths: tuple[str, ...] = DEFAULT_MASKED_PATHS
    readonly_paths: tuple[str, ...] = DEFAULT_READONLY_PATHS


@dataclass(frozen=True)
class MountStep:
    """One mount at ``target`` (a container path), done before pivot_root.

    kind "filesystem": mount(source, target, fstype, flags, data). If it fails with EINVAL
    and ``retry_data`` is set, it is tried again with that data; if it fails with EPERM and
    ``fallback_bind`` is set, that host path is bind-mounted there recursively, read-only.
    kind "bind": the host path ``source`` bind-mounted recursively; ``read_only`` then
    remounts it and every mount under it read-only.
    """

    target: str
    source: str
    fstype: str | None
    flags: int
    data: str = ""
    kind: Literal["filesystem", "bind"] = "filesystem"
    read_only: bool = False
    retry_data: str | None = None
    fallback_bind: str | None = None

    def options(self) -> str:
        """The mount(8)-style option string: "ro,nosuid,nodev,noexec" or "bind,rec,rw"."""
        ro = self.flags & sc.MS_RDONLY or self.read_only
        names = [name for bit, name in _FLAG_NAMES if self.flags & bit]
        return ",".join(["ro" if ro else "rw", *names, *filter(None, [self.data])])

    def describe(self) -> str:
        """One line in mount(8)'s words, for ``corral inspect``."""
        line = f"{self.source} on {self.target} type {self.fstype or 'bind'} ({self.options()})"
        if self.retry_data is not None:
            line += f", retried with {self.retry_data!r} on EINVAL"
        if self.fallback_bind is not None:
            line += f", else host {self.fallback_bind} bound read-only"
        return line


def plan_mounts(spec: MountSpec) -> list[MountStep]:
    """Docker's default mounts (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys,
    /sys/fs/cgroup), then the volumes, parents before children (docker sorts by depth)."""
    pts = "newinstance,ptmxmode=0666,mode=0620"
    userns, dev = spec.userns, sc.MS_NOSUID | sc.MS_STRICTATIME
    steps = [
        MountStep("/proc", "proc", "proc", _SAFE),
        MountStep("/dev", "tmpfs", "tmpfs", dev, "mode=755,size=65536k"),
        # gid=5 (tty) is EINVAL when gid 5 is not mapped in the user namespace: runc's
        # rootless spec and crun then mount without it.
        MountStep("/dev/pts", "devpts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, f"{pts},gid=5",
                  retry_data=pts if userns else None),
        MountStep("/dev/shm", "shm", "tmpfs", _SAFE, "mode=1777,size=65536k"),
        MountStep("/dev/mqueue", "mqueue", "mqueue", _SAFE),
        # sysfs needs the user namespace to own the net namespace; rootless runc and podman
        # bind the host's /sys read-only instead.
        MountStep("/sys", "sysfs", "sysfs", _SAFE | sc.MS_RDONLY,
                  fallback_bind="/sys" if userns else None),
        # In the container's cgroup namespace a fresh cgroup2 mount shows the container's
        # cgroup as its root. cgroup2 is always mountable, also on hybrid hosts.
        MountStep("/sys/fs/cgroup", "cgroup", "cgroup2", _SAFE | sc.MS_RDONLY | sc.MS_RELATIME),
    ]  # fmt: skip
    binds = sc.MS_BIND | sc.MS_REC
    for v in sorted(spec.volumes, key=lambda v: v.destination.count("/")):
        steps.append(MountStep(v.destination, v.source, None, binds, "", "bind", v.read_only))
    return steps


def prepare_root(rootfs: str) -> None:
    """Make every mount a slave (nothing we mount propagates to the host, as runc's default
    rslave) and bind ``rootfs`` onto itself so that it is a mount point pivot_root accepts.

    After MS_SLAVE|MS_REC no mount here is shared, so the rootfs' parent needs no extra
    MS_PRIVATE (runc's rootfsParentMountPrivate only matters for a shared root propagation).
    """
    sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)


def apply_mounts(rootfs: str, steps: list[MountStep]) -> None:
    """Carry out ``steps`` under ``rootfs`` (a real path: symlinks in it are resolved)."""
    rootfs = os.path.realpath(rootfs)
    for step in steps:
        if step.kind == "bind":
            _bind_volume(rootfs, step)
        else:
            _mount_filesystem(rootfs, step)


def _mount_filesystem(rootfs: str, step: MountStep) -> None:
    if step.fstype in ("proc", "sysfs"):
        # Never through a symlink (runc: "must be mounted on ordinary directory").
        dest = os.path.join(rootfs, step.target.lstrip("/"))
        if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest)):
            raise OSError(errno.ENOTDIR, f"{step.fstype} must be mounted on a directory", dest)
    else:
        dest = resolve_in_root(rootfs, step.target)
    os.makedirs(dest, mode=0o755, exist_ok=True)
    try:
        mount_at(dest, step.source, step.fstype, step.flags, step.data)
    except OSError as e:
        if e.errno == errno.EINVAL and step.retry_data is not None:
            mount_at(dest, step.source, step.fstype, step.flags, step.retry_data)
        elif e.errno == errno.EPERM and step.fallback_bind is not None:
            mount_at(dest, step.fallback_bind, None, sc.MS_BIND | sc.MS_REC)
            remount_readonly_tree(dest, step.flags & _SAFE)
        else:
            raise


def _bind_volume(rootfs: str, step: MountStep) -> None:
    is_dir = os.path.isdir(step.source)  # follows a symlink, as the bind mount will
    dest = resolve_in_root(rootfs, step.target)
    inside = os.path.relpath(dest, rootfs)
    if inside == "proc" or inside.startswith("proc/"):
        raise OSError(errno.EPERM, f"volume {step.target} resolves into /proc", dest)
    if not os.path.lexists(dest):
        if is_dir:
            os.makedirs(dest, mode=0o755)
        else:
            os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
    mount_at(dest, step.source, None, step.flags)
    if step.read_only:
        remount_readonly_tree(dest)


def mount_at(dest: str, source: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2) on the very inode ``dest`` names now (runc's WithProcfd): opened with O_PATH,
    checked through /proc/self/fd to still be ``dest``, then mounted on by its fd link, so
    no symlink swapped in after resolution can redirect the mount."""
    fd = os.open(dest, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        link = f"/proc/self/fd/{fd}"
        if os.readlink(link) != dest:
            raise OSError(errno.EXDEV, f"mount target moved to {os.readlink(link)}", dest)
        try:
            sc.mount(source, link, fstype, flags, data or None)
        except OSError as e:
            what = f"mount {source} on {dest} ({fstype or 'bind'}, {data or 'no data'})"
            raise OSError(e.errno, f"{what}: {os.strerror(e.errno or 0)}", dest) from None
    finally:
        os.close(fd)


def locked_flags(path: str) -> int:
    """The nosuid/nodev/noexec of the mount at ``path``, from statvfs(3) f_flag: a remount
    must repeat them, or it fails with EPERM where they are locked (a user namespace)."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _LOCKABLE if f_flag & st)


def remount_readonly(path: str, extra: int = 0) -> None:
    """MS_BIND|MS_REMOUNT|MS_RDONLY of the mount at ``path``, plus ``extra`` flags to add:
    only per-mount flags change (allowed in a user namespace too, as long as no locked flag
    is cleared); the atime mode is kept, as no atime flag is given."""
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | locked_flags(path) | extra
    try:
        sc.mount(None, path, None, flags)
    except OSError as e:
        why = f"remount {path} read-only (flags {flags:#x}): {os.strerror(e.errno or 0)}"
        raise OSError(e.errno, why, path) from None


def remount_readonly_tree(path: str, extra: int = 0) -> None:
    """Make the mount at ``path`` and every mount under it read-only (docker's recursive
    read-only bind), using the mount table this process sees. A mount hidden under another
    one on the same mount point is out of reach of any path, so it is left alone."""
    inside = [
        m.mountpoint
        for m in read_mountinfo()
        if m.mountpoint == path or m.mountpoint.startswith(path.rstrip("/") + "/")
    ]
    for mountpoint in dict.fromkeys(inside):
        remount_readonly(mountpoint, extra)


def pivot_into(rootfs: str) -> None:
    """pivot_root(".", ".") in ``rootfs``, then detach the old root stacked under it.

    After pivot_root(".", ".") the old root is mounted on top of the new one and is the
    cwd; it is made rslave first so its lazy unmount cannot propagate to the host.
    """
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        sc.pivot_root(".", ".")
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def make_root_readonly() -> None:
    """``--read-only``: / becomes read-only, the mounts on it (/proc, /dev, /dev/shm, /sys,
    volumes) stay as they are: the remount is not recursive, as runc's setReadonly."""
    remount_readonly("/")


def readonly_paths(paths: tuple[str, ...]) -> None:
    """runc's readonlyPath: each existing path bound onto itself, then remounted read-only."""
    for path in paths:
        try:
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        except FileNotFoundError:
            continue
        remount_readonly(path)


def mask_paths(paths: tuple[str, ...]) -> None:
    """runc's maskPath: /dev/null bound over a file, an empty read-only tmpfs over a
    directory (the bind fails with ENOTDIR there); a path that does not exist is skipped."""
    for path in paths:
        try:
            sc.mount("/dev/null", path, None, sc.MS_BIND)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)


def setup_filesystem(spec: MountSpec) -> None:
    """Everything above in runc's order; the caller is in its new mount namespace."""
    rootfs = os.path.realpath(spec.rootfs)
    prepare_root(rootfs)
    apply_mounts(rootfs, plan_mounts(spec))
    populate_dev(rootfs, userns=spec.userns)
    pivot_into(rootfs)
    if spec.read_only:
        make_root_readonly()
    readonly_paths(spec.readonly_paths)
    mask_paths(spec.masked_paths)
