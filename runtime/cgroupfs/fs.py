"""CgroupFS: a cgroup2 mount as a value. The only code that opens cgroup v2 files.

A cgroup is named by its path relative to the root ("" is the root itself, "corral/web" a
child). Reads return ``None`` when this kernel lacks the file and raise ``CgroupGone`` when
the cgroup itself vanished; any other failure names the path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from runtime import syscalls
from runtime.cgroupfs.errors import (
    CgroupError,
    CgroupGone,
    ControllerUnavailable,
    InvalidPath,
    NotCgroup2,
    WriteRejected,
)
from runtime.cgroupfs.formats import parse_words
from runtime.cgroupfs.mounts import find_cgroup2

# ENOENT: the directory went away between listing and open. ENODEV: the file was open (or
# being opened) while the cgroup was removed; kernfs then fails every operation with ENODEV.
_GONE = (errno.ENOENT, errno.ENODEV)

T = TypeVar("T")

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_LEAF = "supervisor"
_EVACUATE_TRIES = 5


class CgroupFS:
    """Reads, writes and walks one cgroup2 hierarchy rooted at ``root``.

    ``verify=False`` skips the statfs check so tests can pass a temporary directory.
    """

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT, *, verify: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotCgroup2(f"{self.root}: no such directory")
        self.verified = verify
        if verify:
            magic = syscalls.statfs_type(self.root)
            if magic != syscalls.CGROUP2_SUPER_MAGIC:
                raise NotCgroup2(
                    f"{self.root} is not a cgroup2 mount (statfs type {magic:#x}, "
                    f"expected {syscalls.CGROUP2_SUPER_MAGIC:#x}); "
                    "see `corral doctor` for where cgroup2 is mounted"
                )
        self._real_root = os.path.realpath(self.root)

    @classmethod
    def discover(cls, mountinfo: str = "/proc/self/mountinfo") -> CgroupFS:
        """The cgroup2 hierarchy this process sees: /sys/fs/cgroup on a unified host,
        /sys/fs/cgroup/unified on a hybrid one (from /proc/self/mountinfo)."""
        root = find_cgroup2(mountinfo)
        if root is None:
            raise NotCgroup2(f"{mountinfo} lists no cgroup2 mount; see `corral doctor`")
        return cls(root)

    def __repr__(self) -> str:
        return f"CgroupFS({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------

    def path(self, cgroup: str) -> Path:
        """The directory of ``cgroup``, refusing anything that would leave the root."""
        path = self.root / normalize(cgroup)
        # kernfs refuses symlink(2), so a verified cgroup2 root cannot hold one; a plain
        # directory root (tests, fixtures) can, and must not lead out.
        if not self.verified:
            real = os.path.realpath(path)
            if real != self._real_root and not real.startswith(self._real_root + os.sep):
                raise InvalidPath(f"cgroup path {cgroup!r} leads out of {self.root} (to {real})")
        return path

    def exists(self, cgroup: str) -> bool:
        return self.path(cgroup).is_dir()

    # -- raw file access -------------------------------------------------------------------

    def read(self, cgroup: str, name: str) -> str | None:
        """The text of interface file ``name``; None when this kernel lacks the file."""
        path = self.path(cgroup) / _filename(name)
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            if e.errno in _GONE:
                if e.errno == errno.ENOENT and self.exists(cgroup):
                    return None
                raise CgroupGone(normalize(cgroup)) from None
            if e.errno == errno.EOPNOTSUPP:
                return None  # the *.pressure files when PSI is disabled (psi=0)
            raise CgroupError(f"{path}: {e.strerror}") from e

    def read_as(self, cgroup: str, name: str, parse: Callable[[str, str], T]) -> T | None:
        """``parse(text, path)`` of interface file ``name``; None when the kernel lacks it."""
        text = self.read(cgroup, name)
        return None if text is None else parse(text, str(self.path(cgroup) / name))

    def write(self, cgroup: str, name: str, value: str, *, nonblock: bool = False) -> None:
        """Write ``value`` to interface file ``name`` in one write(2), as the kernel wants.

        ``nonblock`` opens with O_NONBLOCK: memory.high then returns without reclaiming in
        the writer's context (the kernel throttles the cgroup's own tasks instead).
        """
        path = self.path(cgroup) / _filename(name)
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_NONBLOCK if nonblock else 0)
        data = value.encode()
        try:
            fd = os.open(path, flags)
        except OSError as e:
            if e.errno in _GONE and not self.exists(cgroup):
                raise CgroupGone(normalize(cgroup)) from None
            if e.errno == errno.ENOENT:
                raise self._no_such_file(cgroup, name) from None
            raise CgroupError(f"{path}: cannot open for writing: {e.strerror}") from e
        try:
            os.write(fd, data)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise CgroupGone(normalize(cgroup)) from None
            raise WriteRejected(str(path), value, e.errno or 0, e.strerror or "") from e
        finally:
            os.close(fd)

    def _no_such_file(self, cgroup: str, name: str) -> CgroupError:
        # A controller's files appear only once the parent enables it in subtree_control.
        controller = name.split(".", 1)[0]
        parent = normalize(cgroup).rpartition("/")[0]
        enabled_set = self.subtree_control(parent)
        if not normalize(cgroup) or controller in enabled_set or controller == "cgroup":
            return CgroupError(f"{self.path(cgroup) / name}: this kernel has no such file")
        enabled = " ".join(sorted(enabled_set)) or "none"
        return ControllerUnavailable(
            normalize(cgroup),
            [controller],
            self.controllers(normalize(cgroup)),
            f"{name} is missing; the parent's cgroup.subtree_control enables: {enabled}",
        )

    # -- the tree --------------------------------------------------------------------------

    def children(self, cgroup: str) -> list[str]:
        """Names of the direct child cgroups; [] when the cgroup is gone."""
        try:
            with os.scandir(self.path(cgroup)) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError as e:
            if e.errno in _GONE:
                return []
            raise CgroupError(f"{self.path(cgroup)}: {e.strerror}") from e

    def walk(self, start: str = "", max_depth: int | None = None) -> Iterator[str]:
        """Every cgroup under ``start`` (itself first), depth-first, tolerating churn.

        A cgroup removed before it is listed is not yielded and a removed subtree is cut
        short, but a yielded cgroup may vanish before the caller reads it: readers raise
        CgroupGone for that, which callers walking a live tree must expect.
        """
        base = normalize(start)
        stack: list[tuple[str, int]] = [(base, 0)]
        while stack:
            cgroup, depth = stack.pop()
            if depth > 0 or self.exists(cgroup):
                yield cgroup
            if max_depth is not None and depth >= max_depth:
                continue
            kids = self.children(cgroup)
            stack.extend((join(cgroup, k), depth + 1) for k in reversed(kids))

    def create(self, cgroup: str, *, exist_ok: bool = False) -> bool:
        """mkdir the cgroup (and missing parents). True when this call created it."""
        path = self.path(cgroup)
        if not normalize(cgroup):
            raise InvalidPath("the root cgroup always exists and cannot be created")
        made: list[Path] = []
        parts = normalize(cgroup).split("/")
        try:
            for i in range(1, len(parts) + 1):
                sub = self.root / "/".join(parts[:i])
                try:
                    os.mkdir(sub)
                    made.append(sub)
                except FileExistsError:
                    if i == len(parts) and not exist_ok:
                        raise CgroupError(f"{path}: cgroup already exists") from None
                except OSError as e:
                    raise CgroupError(f"{sub}: cannot create cgroup: {e.strerror}") from e
        except CgroupError:
            for sub in reversed(made):  # leave no half-made path behind
                os.rmdir(sub)
            raise
        return bool(made)

    def remove(self, cgroup: str, *, recursive: bool = False) -> None:
        """rmdir the cgroup (children first with ``recursive``). Gone already is fine.

        The kernel refuses (EBUSY) while processes remain: kill or move them first.
        """
        name = normalize(cgroup)
        if not name:
            raise InvalidPath("refusing to remove the root cgroup")
        if recursive:
            for child in self.children(name):
                self.remove(join(name, child), recursive=True)
        try:
            os.rmdir(self.path(name))
        except OSError as e:
            if e.errno in _GONE:
                return
            raise CgroupError(f"{self.path(name)}: cannot remove cgroup: {e.strerror}") from e

    # -- membership and controllers --------------------------------------------------------

    def procs(self, cgroup: str) -> list[int]:
        """cgroup.procs: the pids of the processes in this cgroup (not its children)."""
        text = self.read(cgroup, "cgroup.procs") or ""
        return [int(w) for w in text.split()]

    def move(self, pid: int, cgroup: str) -> None:
        """Move process ``pid`` (all its threads) into ``cgroup``."""
        if pid <= 0:
            raise InvalidPath(f"pid {pid}: expected a positive process id")
        self.write(cgroup, "cgroup.procs", str(pid))

    def controllers(self, cgroup: str) -> set[str]:
        """cgroup.controllers: the controllers this cgroup may use."""
        return set(parse_words(self.read(cgroup, "cgroup.controllers") or ""))

    def subtree_control(self, cgroup: str) -> set[str]:
        """cgroup.subtree_control: the controllers enabled for this cgroup's children."""
        return set(parse_words(self.read(cgroup, "cgroup.subtree_control") or ""))

    def enable_controllers(
        self, cgroup: str, wanted: Iterable[str], *, leaf: str = DEFAULT_LEAF
    ) -> list[str]:
        """Enable ``wanted`` for the children of ``cgroup``; returns the newly enabled ones.

        "No internal processes": a non-root cgroup cannot hold processes once a domain
        controller (memory, io, ...) is in its subtree_control (EBUSY; the threaded cpu,
        cpuset and pids are let through), so any it holds are first moved into ``leaf``.
        """
        name = normalize(cgroup)
        wanted = list(dict.fromkeys(wanted))
        missing = [c for c in wanted if c not in self.controllers(name)]
        if missing:
            raise ControllerUnavailable(name, missing, self.controllers(name))
        todo = [c for c in wanted if c not in self.subtree_control(name)]
        if not todo:
            return []
        line = " ".join(f"+{c}" for c in todo)
        tries = 0
        while True:
            if name:
                self._evacuate(name, leaf)
            try:
                self.write(name, "cgroup.subtree_control", line)
                return todo
            except WriteRejected as e:
                # A process that forked between the move and the write left its child
                # behind: move the stragglers and try again.
                tries += 1
                if e.errno != errno.EBUSY or not name or tries >= _EVACUATE_TRIES:
                    raise

    def delegate(self, cgroup: str, wanted: Iterable[str], *, leaf: str = DEFAULT_LEAF) -> None:
        """Make ``wanted`` usable *in* ``cgroup``: enable them in every ancestor's
        subtree_control, root first (a controller reaches a child only through its parent)."""
        wanted = list(wanted)
        parts = normalize(cgroup).split("/") if normalize(cgroup) else []
        for depth in range(len(parts)):
            self.enable_controllers("/".join(parts[:depth]), wanted, leaf=leaf)

    def _evacuate(self, cgroup: str, leaf: str) -> None:
        pids = self.procs(cgroup)
        if not pids:
            return
        target = join(cgroup, leaf)
        self.create(target, exist_ok=True)
        for pid in pids:
            try:
                self.move(pid, target)
            except WriteRejected as e:
                if e.errno != errno.ESRCH:  # exited meanwhile
                    raise

    # -- whole-cgroup verbs ----------------------------------------------------------------

    def freeze(self, cgroup: str) -> None:
        """cgroup.freeze=1; cgroup.events reports frozen once every task has stopped."""
        self.write(cgroup, "cgroup.freeze", "1")

    def thaw(self, cgroup: str) -> None:
        self.write(cgroup, "cgroup.freeze", "0")

    def kill(self, cgroup: str) -> None:
        """cgroup.kill: SIGKILL every process in the subtree, race-free against forks."""
        if not normalize(cgroup):
            raise InvalidPath("refusing to kill the root cgroup")
        self.write(cgroup, "cgroup.kill", "1")


def normalize(cgroup: str) -> str:
    """ "/a//b/" -> "a/b". Refuses "..", ".", NUL and anything else that could leave the root."""
    if "\0" in cgroup or "\n" in cgroup:
        # The kernel refuses "\n" in a cgroup name at mkdir, so no cgroup can have one.
        raise InvalidPath(f"cgroup path {cgroup!r}: contains a NUL byte or a newline")
    parts = [p for p in cgroup.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise InvalidPath(
                f"cgroup path {cgroup!r}: '{part}' is not allowed; "
                "give a path below the cgroup root like 'corral/web'"
            )
    return "/".join(parts)


def join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child


def _filename(name: str) -> str:
    if "/" in name or name in ("", ".", ".."):
        raise InvalidPath(f"interface file name {name!r}: expected a name like 'cpu.max'")
    return name
