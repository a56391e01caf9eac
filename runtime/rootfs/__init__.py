"""Root filesystems for `corral run`: the staging every builder shares.

A builder works in a temporary sibling of the target directory (same filesystem, so the
final rename(2) is atomic) and renames it into place only when everything succeeded. On any
failure, ctrl-C included, the sibling is removed: first every mount below it is detached
(debootstrap mounts /proc and /sys inside its target and leaves them when it dies), then the
tree is removed without following symlinks and without crossing into another filesystem.

Builders: ``runtime.rootfs.busybox`` (Debian's busybox-static) and ``runtime.rootfs.debian``
(debootstrap).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime import syscalls
from runtime.cgroupfs.mounts import parse_mountinfo

# Files the runtime binds over (hosts, resolv.conf) or writes (hostname): a bind mount needs
# an existing file as its target, and an image must not carry the build host's copies.
PLACEHOLDERS = ("etc/hosts", "etc/resolv.conf", "etc/hostname")


class RootfsError(Exception):
    """Building a root filesystem failed; nothing was left behind."""


class InvalidArgument(RootfsError):
    """A directory, suite, package name or mirror that cannot be used; nothing was done."""


def resolve_target(target: str, force: bool) -> Path:
    """The absolute target path, checked before any work: its parent must be a directory,
    and it must be absent, an empty directory, or (with ``force``) a directory to replace.
    Neither a symlink nor a mount point is replaced: the rename would not do what was meant."""
    absolute = os.path.abspath(target)
    if absolute == "/":
        raise InvalidArgument("'/' cannot be a root filesystem target")
    # The parent resolved, as /proc/self/mountinfo names mount points by their real path.
    path = Path(os.path.realpath(os.path.dirname(absolute))) / os.path.basename(absolute)
    if not path.parent.is_dir():
        raise InvalidArgument(f"{path.parent}: no such directory (the parent of {path})")
    if path.is_symlink():
        raise InvalidArgument(f"{path} is a symlink: give the directory it points to")
    if not path.exists():
        return path
    if not path.is_dir():
        raise InvalidArgument(f"{path} exists and is not a directory")
    if os.path.ismount(path):
        raise InvalidArgument(f"{path} is a mount point: give a directory inside it")
    if any(path.iterdir()) and not force:
        raise InvalidArgument(f"{path} exists and is not empty (use --force to replace it)")
    mounted = mounts_under(path)
    if mounted:
        raise InvalidArgument(f"{path} has mounts below it ({', '.join(mounted)}): unmount them")
    return path


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh directory (mode 0755) beside ``target``; renamed onto ``target`` when the
    block succeeds, removed (see ``remove_tree``) when it raises, KeyboardInterrupt included.
    An OSError from the block (ENOSPC, EROFS, ...) becomes a RootfsError naming the path."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.corral-", dir=target.parent))
    except OSError as e:
        raise RootfsError(f"cannot create a directory in {target.parent}: {e.strerror}") from e
    try:
        tmp.chmod(0o755)
        yield tmp
        replace(tmp, target)
    except OSError as e:
        remove_tree(tmp)
        raise RootfsError(f"{target}: {e.strerror}{_inside(tmp, e)}; nothing was made") from e
    except BaseException:
        remove_tree(tmp)
        raise


def _inside(tmp: Path, e: OSError) -> str:
    """Where in the tree the error happened, as " at /usr/bin/env" (a symlink's error names
    the link second, after its target)."""
    for name in (e.filename2, e.filename):
        if isinstance(name, str) and name.startswith(f"{tmp}/"):
            return " at " + name[len(str(tmp)) :]
    return ""


def replace(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``. rename(2) replaces an absent path or an empty directory;
    a non-empty one (``--force``) is first renamed aside and removed after the swap."""
    old = None
    if target.exists() and any(target.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.corral-old-", dir=target.parent))
        os.rename(target, old)  # onto the empty directory mkdtemp made
    try:
        os.rename(new, target)
    except OSError as e:
        if old is not None:
            os.rename(old, target)
        raise RootfsError(f"cannot rename {new} to {target}: {e.strerror}") from e
    if old is not None:
        try:
            remove_tree(old)
        except (OSError, RootfsError) as e:
            raise RootfsError(f"made {target}, but the old tree left in {old}: {e}") from e


def mounts_under(path: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace (/proc/self/mountinfo),
    deepest first: the order in which they can be unmounted."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    real = os.path.realpath(path)
    prefix = real.rstrip("/") + "/"
    points = {
        m.mountpoint
        for m in parse_mountinfo(mountinfo)
        if m.mountpoint == real or m.mountpoint.startswith(prefix)
    }
    return sorted(points, key=lambda p: (-p.count("/"), p))


def unmount_under(path: Path) -> None:
    """Detach every mount at or below ``path`` (umount2 MNT_DETACH, so a busy one goes too:
    it stays alive only for whoever still uses it, outside the tree)."""
    for _ in range(8):  # a mount point can be stacked: unmounting reveals the one below
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            try:
                syscalls.umount2(point, syscalls.MNT_DETACH)
            except OSError as e:
                if e.errno != errno.EINVAL:  # already gone with the mount above it
                    raise RootfsError(f"cannot unmount {point}: {e.strerror}") from e
    raise RootfsError(f"mounts keep appearing below {path}: {', '.join(mounts_under(path))}")


def remove_tree(path: Path) -> None:
    """Remove a staging directory: unmount below it, then delete without following symlinks
    (shutil.rmtree's fd-based walk opens every directory with O_NOFOLLOW) and refuse to
    descend into another filesystem, so a mount that could not be detached is never emptied."""
    if not os.path.lexists(path):
        return
    unmount_under(path)
    device = os.lstat(path).st_dev

    def check(p: str) -> None:
        if os.lstat(p).st_dev != device:
            raise RootfsError(f"{p} is on another filesystem: not removing {path}")

    for dirpath, dirnames, _ in os.walk(path):  # os.walk does not follow symlinks
        for name in dirnames:
            check(os.path.join(dirpath, name))
    shutil.rmtree(path)


def write_placeholders(root: Path, names: tuple[str, ...] = PLACEHOLDERS) -> None:
    """Empty /etc/hosts, /etc/resolv.conf and /etc/hostname (0644) where absent."""
    for rel in names:
        path = root / rel
        if not os.path.lexists(path):
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.touch(mode=0o644)
            path.chmod(0o644)


def tree_size(root: Path) -> int:
    """Bytes in the regular files of ``root``, symlinks not followed (what `du -sb` counts
    for files, without directories)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
