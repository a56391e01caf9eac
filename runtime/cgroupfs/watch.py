"""Which files of which cgroups changed since the last look: inotify on cgroup directories.

A poller that re-reads every limit file every poll pays for files that almost never change.
The kernel says when they do, with two mechanisms that both reach an inotify watch on the
cgroup's directory as IN_MODIFY carrying the file's name (verified on Debian's 6.1 in
tests/kernel/test_watch.py):

- write(2) to any file of the directory, limit files included (vfs_write ->
  fsnotify_modify). Only writes through the same superblock are seen: a cgroup2 mount made in
  another cgroup namespace (a container's own /sys/fs/cgroup) has inodes of its own, so a
  write through it raises nothing here. Readers that must also catch those re-read in full
  now and then (monitor.collector's ``limits_every``).
- kernfs_notify, which the kernel calls when cgroup.events (populated, frozen),
  memory.events and pids.events change. kernfs_notify_workfn finds the file's inode with
  ilookup(), so a file nobody holds open may have no inode and then raises nothing: these
  notifications are only trusted for files the reader keeps open. They come from a
  workqueue, at most one per 10 ms per file (cgroup_file_notify), so a change made just
  before a poll may only be seen at the next one.

mkdir and rmdir of a child raise IN_CREATE / IN_DELETE (with IN_ISDIR) on the parent. The
removed directory's own watch is not ended by the kernel (kernfs leaves the inode's link
count, so there is no IN_DELETE_SELF nor IN_IGNORED) and keeps the dead inode pinned until
inotify_rm_watch: ``retain`` drops the watches of the cgroups no longer polled. When the
event queue overflows (fs.inotify.max_queued_events) the kernel drops events and queues
IN_Q_OVERFLOW: then every file of every cgroup must be taken as changed.

Not thread-safe: one poller thread owns a ChangeWatch.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Collection, Set
from dataclasses import dataclass, field

from runtime import syscalls

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_MASK = syscalls.IN_MODIFY | syscalls.IN_CREATE | syscalls.IN_DELETE | syscalls.IN_ONLYDIR
_BUFFER = 1 << 16


@dataclass(slots=True)
class Changes:
    """What changed since the last ``drain``: cgroup path -> names of the files written or
    notified; the cgroups in which a child cgroup was made or removed; ``overflowed``:
    events were lost, so anything may have changed."""

    files: dict[str, set[str]] = field(default_factory=dict)
    children: set[str] = field(default_factory=set)  # cgroups in which a child was made/removed
    overflowed: bool = False

    def of(self, cgroup: str) -> Set[str]:
        return self.files.get(cgroup, _NONE)


_NONE: frozenset[str] = frozenset()


class ChangeWatch:
    """One inotify instance watching cgroup directories under ``root``.

    Raises OSError from the constructor when inotify is unavailable (EMFILE: too many
    instances); ``watch`` returns False when a directory cannot be watched (ENOSPC past
    fs.inotify.max_user_watches, or the cgroup is gone), so the caller falls back to
    reading that cgroup's files every poll."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root).rstrip("/")
        self._fd = syscalls.inotify_init1(syscalls.IN_NONBLOCK | syscalls.IN_CLOEXEC)
        self._wd: dict[str, int] = {}  # cgroup path -> watch descriptor
        self._path: dict[int, str] = {}  # watch descriptor -> cgroup path
        self.full = False  # the last watch failed with ENOSPC

    def __len__(self) -> int:
        return len(self._wd)

    def __enter__(self) -> ChangeWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._wd.clear()
        self._path.clear()

    def watching(self, cgroup: str) -> bool:
        return cgroup in self._wd

    def watch(self, cgroup: str) -> bool:
        """Start watching ``cgroup`` (a normalized path, "" for the root); True when it is
        watched. Watching again after the cgroup was re-created replaces the old watch."""
        path = f"{self.root}/{cgroup}" if cgroup else self.root
        try:
            wd = syscalls.inotify_add_watch(self._fd, path, _MASK)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.ENOENT, errno.ENOTDIR):
                raise
            self.full = e.errno == errno.ENOSPC
            self.unwatch(cgroup)
            return False
        old = self._wd.get(cgroup)
        if old is not None and old != wd:  # re-created: the old watch pins the dead inode
            self._path.pop(old, None)
            self._rm_watch(old)
        self._wd[cgroup] = wd
        self._path[wd] = cgroup
        return True

    def unwatch(self, cgroup: str) -> None:
        wd = self._wd.pop(cgroup, None)
        if wd is None:
            return
        if self._path.get(wd) == cgroup:
            del self._path[wd]
        self._rm_watch(wd)

    def _rm_watch(self, wd: int) -> None:
        try:
            syscalls.inotify_rm_watch(self._fd, wd)
        except OSError as e:
            if e.errno != errno.EINVAL:  # already ended (IN_IGNORED on other filesystems)
                raise

    def retain(self, cgroups: Collection[str]) -> None:
        """Stop watching every cgroup not in ``cgroups`` (the ones this poll discovered)."""
        for cgroup in [c for c in self._wd if c not in cgroups]:
            self.unwatch(cgroup)

    def drain(self) -> Changes:
        """Every event queued since the last drain, without blocking."""
        changes = Changes()
        while True:
            try:
                buf = os.read(self._fd, _BUFFER)
            except BlockingIOError:
                return changes
            self._parse(buf, changes)

    def _parse(self, buf: bytes, changes: Changes) -> None:
        offset = 0
        while offset < len(buf):
            wd, mask, _, size = _EVENT.unpack_from(buf, offset)
            start = offset + _EVENT.size
            offset = start + size
            if mask & syscalls.IN_Q_OVERFLOW:
                changes.overflowed = True
                continue
            cgroup = self._path.get(wd)
            if cgroup is None:
                continue
            if mask & syscalls.IN_IGNORED:  # the directory is gone, and so is the watch
                del self._path[wd]
                if self._wd.get(cgroup) == wd:
                    del self._wd[cgroup]
                continue
            if mask & (syscalls.IN_CREATE | syscalls.IN_DELETE):
                if mask & syscalls.IN_ISDIR:
                    changes.children.add(cgroup)
                continue
            if mask & syscalls.IN_MODIFY and size:
                name = buf[start:offset].rstrip(b"\0").decode("utf-8", "surrogateescape")
                changes.files.setdefault(cgroup, set()).add(name)
