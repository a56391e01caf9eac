"""``--userns auto``: id maps from /etc/subuid and /etc/subgid, and an idmapped root filesystem.

The container's user namespace maps container ids 0..65535 onto an unprivileged host range
(user_namespaces(7)). The shim writes the maps from outside, in the kernel's order:
/proc/PID/setgroups "deny", then uid_map, then gid_map (each map written once, in one write).

A root filesystem belongs to host root on disk, which the mapped root (host uid 100000) may
not write. An idmapped mount (mount_setattr(2) MOUNT_ATTR_IDMAP) shows the filesystem's ids
through the mapping: on-disk uid 0 appears as the container's root, and what that root creates
is stored as uid 0 again. Volumes are plain binds, not idmapped: what the container's root
writes there is owned by the mapped host uid (100000), as with docker's userns-remap.

    fd = idmapped_rootfs(rootfs, spec)   # in the shim, before forking the container
    attach(fd, rootfs)                   # in the container, in its own mount namespace

Verified on Linux 6.1 (Debian) and 6.18: ext4 can be idmapped on both, tmpfs from 6.3 only;
overlayfs, ramfs, 9p and procfs cannot.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import pwd
import signal
from dataclasses import dataclass

from runtime import syscalls as sc
from runtime.cgroupfs.mounts import read_mountinfo

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
CONTAINER_IDS = 65536  # container ids 0..65535, as podman's and docker's default maps
MAX_ID = 0xFFFFFFFE  # (uid_t)-1 is the invalid id and can never be mapped
MAX_MAP_LINES = 340  # per map since Linux 4.15 (5 before)
SUBID_FORM = "NAME:START:COUNT (NAME a user name or numeric uid)"
IDMAP_FILESYSTEMS = "ext4, xfs or btrfs (tmpfs from Linux 6.3)"


@dataclass(frozen=True)
class IdMap:
    """One line of uid_map/gid_map: container ids container..container+size-1 are host ids
    host..host+size-1."""

    container: int
    host: int
    size: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"id map {self}: size {self.size} must be at least 1")
        for side, start in (("container", self.container), ("host", self.host)):
            if start < 0 or start + self.size - 1 > MAX_ID:
                raise ValueError(f"id map {self}: {side} ids must lie within 0..{MAX_ID}")

    def __str__(self) -> str:
        return f"{self.container} {self.host} {self.size}"


@dataclass(frozen=True)
class UserNamespaceSpec:
    """The uid and gid maps of a container's user namespace."""

    uids: tuple[IdMap, ...]
    gids: tuple[IdMap, ...]

    def __post_init__(self) -> None:
        for name, maps in (("uid", self.uids), ("gid", self.gids)):
            if not 1 <= len(maps) <= MAX_MAP_LINES:
                raise ValueError(f"{name} map has {len(maps)} lines; allowed 1..{MAX_MAP_LINES}")
            for side in ("container", "host"):
                spans = sorted((getattr(m, side), getattr(m, side) + m.size, m) for m in maps)
                for (_, end, a), (start, _, b) in itertools.pairwise(spans):
                    if start < end:
                        raise ValueError(f"{name} map lines '{a}' and '{b}' overlap ({side} ids)")


DEFAULT_RANGE = IdMap(0, 100000, CONTAINER_IDS)
"""Used when /etc/sub[ug]id gives no range to the user: host ids 100000..165535. That is the
first range useradd hands out (login.defs SUB_UID_MIN 100000, SUB_UID_COUNT 65536), so the
range docker's ``dockremap`` and podman's ``containers`` user get on a fresh host too."""


class SubidError(ValueError):
    """/etc/subuid or /etc/subgid is malformed or gives no usable range."""


class IdmapUnsupported(Exception):
    """The root filesystem cannot be given an idmapped mount; the message says what to do."""

    def __init__(self, rootfs: str, reason: str, spec: UserNamespaceSpec) -> None:
        self.rootfs, self.reason = rootfs, reason
        super().__init__(
            f"--userns auto cannot make {rootfs} writable for the container's root: {reason}. "
            f"Put the root filesystem on {IDMAP_FILESYSTEMS}, or run with --userns host, or "
            f"chown it to the mapped range (container root is host uid {spec.uids[0].host}, "
            f"gid {spec.gids[0].host})"
        )


@dataclass(frozen=True)
class SubidRange:
    """One line of /etc/subuid or /etc/subgid (subuid(5)); ``line`` is its number."""

    owner: str
    start: int
    count: int
    line: int


def parse_subid(text: str, path: str) -> list[SubidRange]:
    """The ranges of a subuid(5)/subgid(5) file, in file order; blank lines and '#' comments
    are skipped. SubidError names the file, the line and what is allowed."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        where = f"{path} line {number} ({raw!r})"
        if len(fields) != 3 or not fields[0]:
            raise SubidError(f"{where}: expected {SUBID_FORM}")
        owner, start, count = fields
        if not (start.isascii() and start.isdigit() and count.isascii() and count.isdigit()):
            raise SubidError(f"{where}: START and COUNT must be decimal numbers")
        first, size = int(start), int(count)
        if size < 1 or first + size - 1 > MAX_ID:
            raise SubidError(f"{where}: COUNT must be at least 1 and the range within 0..{MAX_ID}")
        out.append(SubidRange(owner, first, size, number))
    return out


def _owner_names(user: str) -> set[str]:
    # subuid(5) lines name a user by login name or by numeric uid; both count.
    names = {user}
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        names |= {entry.pw_name, str(entry.pw_uid)}
    except KeyError:
        pass
    return names


def select_range(ranges: list[SubidRange], user: str, path: str) -> IdMap:
    """Container ids 0..65535 onto the first range of ``user`` with at least 65536 ids, or
    DEFAULT_RANGE when the file gives ``user`` none (refused if another user holds it)."""
    names = _owner_names(user)
    own = [r for r in ranges if r.owner in names]
    for r in own:
        if r.start == 0:
            raise SubidError(f"{path} line {r.line}: START 0 would map container root to host root")
        if r.count >= CONTAINER_IDS:
            return IdMap(0, r.start, CONTAINER_IDS)
    if own:
        found = ", ".join(f"{r.start}:{r.count} (line {r.line})" for r in own)
        raise SubidError(
            f"{path}: the ranges of {user!r} ({found}) are smaller than {CONTAINER_IDS} ids; "
            f"--userns auto needs one range of at least {CONTAINER_IDS}"
        )
    low, high = DEFAULT_RANGE.host, DEFAULT_RANGE.host + DEFAULT_RANGE.size
    for r in ranges:
        if r.start < high and low < r.start + r.count:
            raise SubidError(
                f"{path} gives {user!r} no range and the default {low}:{DEFAULT_RANGE.size} "
                f"overlaps {r.owner!r}'s {r.start}:{r.count} (line {r.line}); add a line "
                f"'{user}:START:{CONTAINER_IDS}' with a range no other user has"
            )
    return DEFAULT_RANGE


def _read_range(path: str, user: str) -> IdMap:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return DEFAULT_RANGE
    except (OSError, UnicodeDecodeError) as e:
        raise SubidError(f"cannot read {path}: {e}") from None
    return select_range(parse_subid(text, path), user, path)


def auto_mapping(
    user: str = "root", subuid: str = SUBUID, subgid: str = SUBGID
) -> UserNamespaceSpec:
    """Container uids and gids 0..65535 onto the first range of at least 65536 ids that
    /etc/subuid and /etc/subgid give ``user``, else DEFAULT_RANGE (each file on its own).

    ``user`` is "root" because corral runs as root: the files list the ranges each user may
    map (newuidmap(1) checks the caller's). Podman's rootful ``--userns=auto`` reads the user
    ``containers`` (storage.conf root-auto-userns-user) and docker's userns-remap "default"
    the user ``dockremap``; pass that name to share their ranges.
    """
    return UserNamespaceSpec(uids=(_read_range(subuid, user),), gids=(_read_range(subgid, user),))


def map_text(maps: tuple[IdMap, ...]) -> str:
    """The text of /proc/PID/uid_map or gid_map: "CONTAINER HOST SIZE" lines."""
    return "".join(f"{m}\n" for m in maps)


_WRITE_HINTS = {
    errno.EPERM: "written already, setgroups after gid_map, the process is not in a new "
    "user namespace, or the writer lacks CAP_SETUID/CAP_SETGID over its parent namespace",
    errno.EINVAL: "the kernel refused the map: overlapping ranges, too many lines, or ids "
    "the writer's own user namespace does not map",
    errno.ENOENT: "the process has exited",
    errno.ESRCH: "the process has exited",
}


def _write_proc(pid: int, name: str, text: str) -> None:
    path = f"/proc/{pid}/{name}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, text.encode())  # the kernel takes a map in one write only
        finally:
            os.close(fd)
    except OSError as e:
        hint = _WRITE_HINTS.get(e.errno or 0, os.strerror(e.errno or 0))
        raise OSError(e.errno, f"write {text!r} to {path}: {sc.errno_name(e.errno or 0)} "
                      f"({hint})", path) from None  # fmt: skip
    if written != len(text.encode()):
        raise OSError(errno.EIO, f"write {text!r} to {path}: only {written} bytes taken", path)


def write_maps(pid: int, spec: UserNamespaceSpec) -> None:
    """From outside the namespace: /proc/PID/setgroups "deny" (required before an
    unprivileged gid_map, and it keeps the container from dropping groups that deny
    access), then /proc/PID/uid_map, then /proc/PID/gid_map."""
    _write_proc(pid, "setgroups", "deny")
    _write_proc(pid, "uid_map", map_text(spec.uids))
    _write_proc(pid, "gid_map", map_text(spec.gids))


def _hold_userns(ready_w: int, go_r: int) -> None:
    code = 0
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        sc.unshare(sc.CLONE_NEWUSER)
        os.write(ready_w, b"ok")
        os.read(go_r, 1)  # a byte or EOF: the namespace fd is open, or the parent failed
    except OSError as e:
        os.write(ready_w, str(e.errno or errno.EIO).encode())
        code = 1
    finally:
        os._exit(code)


def userns_fd(spec: UserNamespaceSpec) -> int:
    """An fd of a user namespace with ``spec``'s maps (/proc/CHILD/ns/user of a helper that
    unshared CLONE_NEWUSER and exits once the fd is open: the fd keeps the namespace alive).
    A fork, so the caller may be multithreaded: the child is not."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _hold_userns(ready_w, go_r)
    os.close(ready_w)
    os.close(go_r)
    try:
        answer = os.read(ready_r, 16)
        if answer != b"ok":
            code = int(answer or errno.ECHILD)
            raise OSError(code, f"unshare(CLONE_NEWUSER) in a helper: {os.strerror(code)}")
        write_maps(pid, spec)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        with contextlib.suppress(BrokenPipeError):
            os.write(go_w, b"x")
        for fd in (ready_r, go_w):
            os.close(fd)
        os.waitpid(pid, 0)


def _mounts_at(path: str) -> str:
    # The mount holding ``path`` (the last of the longest mount points above it: later
    # mounts stack on earlier ones), then the mounts under it, as "TYPE at POINT".
    mounts = read_mountinfo()
    above = [m for m in mounts if os.path.commonpath([m.mountpoint, path]) == m.mountpoint]
    holder = max(reversed(above), key=lambda m: len(m.mountpoint))
    under = [
        f"{m.fstype} at {m.mountpoint}"
        for m in mounts
        if m.mountpoint != path and m.mountpoint.startswith(path.rstrip("/") + "/")
    ]
    text = f"its filesystem ({holder.fstype} at {holder.mountpoint})"
    return text + (f" or one mounted under it ({', '.join(under)})" if under else "")


def _unsupported_reason(path: str, err: OSError) -> str:
    release = os.uname().release
    if err.errno == errno.ENOSYS:
        return f"Linux {release} has no idmapped mounts (open_tree/mount_setattr, Linux 5.12)"
    if err.errno == errno.EPERM:
        return (
            f"corral lacks CAP_SYS_ADMIN over the user namespace that mounted {path} "
            "(is corral not run as root, or the filesystem mounted inside a user namespace?)"
        )
    return f"{_mounts_at(path)} does not support idmapped mounts on Linux {release}"


def idmapped_rootfs(rootfs: str, spec: UserNamespaceSpec) -> int:
    """A detached idmapped copy of the mount tree at ``rootfs``, as an fd (O_CLOEXEC, so
    only forked children inherit it): open_tree(2) OPEN_TREE_CLONE|AT_RECURSIVE, then
    mount_setattr(2) MOUNT_ATTR_IDMAP (recursively) with a user namespace of ``spec``'s maps.

    Nothing is attached anywhere: closing the fd unmounts it. IdmapUnsupported, with what to
    do, when the filesystem (or one under ``rootfs``) cannot be idmapped."""
    path = os.path.realpath(rootfs)
    if not os.path.isdir(path):
        why = f"root filesystem {rootfs} is not an existing directory"
        raise NotADirectoryError(errno.ENOTDIR, why, rootfs)
    ns = userns_fd(spec)
    try:
        flags = sc.OPEN_TREE_CLONE | sc.OPEN_TREE_CLOEXEC | sc.AT_RECURSIVE
        tree = sc.open_tree(sc.AT_FDCWD, path, flags)
        try:
            sc.mount_setattr(
                tree, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE, sc.MOUNT_ATTR_IDMAP, 0, ns
            )
        except BaseException:
            os.close(tree)
            raise
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS):
            raise
        raise IdmapUnsupported(rootfs, _unsupported_reason(path, e), spec) from None
    finally:
        os.close(ns)
    return tree


def check_idmap_support(path: str) -> str | None:
    """None when the mount tree at ``path`` can be idmapped, else why not: a trial
    idmapped_rootfs with DEFAULT_RANGE, closed at once. (statfs(2) f_type is no guide: 9p
    reports the host's filesystem type, and support depends on the kernel version.)"""
    try:
        os.close(idmapped_rootfs(path, UserNamespaceSpec((DEFAULT_RANGE,), (DEFAULT_RANGE,))))
    except IdmapUnsupported as e:
        return e.reason
    except OSError as e:
        return e.strerror or str(e)
    return None


def attach(fd: int, target: str) -> None:
    """move_mount(2) MOVE_MOUNT_F_EMPTY_PATH: mount the detached tree ``fd`` on ``target``
    in the caller's mount namespace. The container calls it in its own mount namespace with
    ``target`` the rootfs path, before setup_filesystem binds that path onto itself; the
    mount code then uses ``target`` as the rootfs. The fd may be closed afterwards."""
    sc.move_mount(fd, "", sc.AT_FDCWD, target, sc.MOVE_MOUNT_F_EMPTY_PATH)
