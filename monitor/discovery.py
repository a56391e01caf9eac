"""Which cgroups the collector reads: a walk of the cgroup2 tree on every poll.

Globs are matched against a cgroup's path relative to the cgroup2 root, the same path every
sample, metric and dashboard shows ("" is the root, "system.slice/cron.service" a unit), with
or without a leading "/":

- ``*`` matches any run of characters within one path component (never "/"), ``?`` one
  character, ``[abc]``/``[!abc]`` one character of (or not of) a set, as in fnmatch;
- ``**`` as a whole component matches zero or more components: ``system.slice/**`` is the
  slice and everything below it, ``**/*.scope`` every scope at any depth, ``**`` everything
  including the root.

A cgroup is read when it matches some ``include`` glob and no ``exclude`` glob. An exclude
glob ending in ``/**`` also stops the walk from descending below the cgroups it matches.
``max_depth`` counts levels below ``subtree`` (0: the subtree's own cgroup only).

The kernel offers no change notification for the tree that a poller could rely on (kernfs
updates a directory's mtime only once it has been setattr'd), so the tree is walked on every
poll. Listing a cgroup's directory costs a getdents of all its interface files (60 or so with
every controller on), so a cgroup whose cgroup.stat says ``nr_descendants 0`` is not listed:
given the collector's OpenFiles, that is one pread of a kept fd, and most cgroups are leaves.
A child created just after that read is found at the next poll, as it would be after a
listing. Directory entries carry the inode number, which changes when a cgroup is removed and
re-created under the same path.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Mapping, Sequence

from runtime.cgroupfs import CgroupError, CgroupFS, CgroupGone, normalize
from runtime.cgroupfs.core import parse_cgroup_stat
from runtime.cgroupfs.openfiles import OpenFiles

_GONE = (errno.ENOENT, errno.ENODEV)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression of one glob (see the module docstring for the rules)."""
    parts = pattern.strip("/").split("/")
    collapsed: list[str] = []
    for part in parts:  # "**/**" means what "**" means
        if not (part == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(part)
    out: list[str] = []
    last = len(collapsed) - 1
    for i, part in enumerate(collapsed):
        if part == "**":
            if i == 0:
                out.append(".*" if i == last else "(?:[^/]+/)*")
            else:
                out.append("(?:/[^/]+)*" if i == last else "/(?:[^/]+/)*")
            continue
        if i > 0 and collapsed[i - 1] != "**":
            out.append("/")
        out.append(_component(part))
    return re.compile("".join(out), re.DOTALL)


def _component(part: str) -> str:
    """fnmatch's rules for one path component, with no wildcard ever matching "/"."""
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1 if part[i : i + 1] == "!" else i
            j = j + 1 if part[j : j + 1] == "]" else j  # "[]a]": a leading "]" is literal
            end = part.find("]", j)
            if end < 0:  # no closing bracket: a literal "[", as fnmatch has it
                out.append(re.escape(c))
                continue
            body, i = part[i:end], end + 1
            negate = body.startswith("!")
            chars = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body[negate:])
            out.append(f"[^/{chars}]" if negate else f"[{chars}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


class Discovery:
    """The cgroups under ``subtree`` that the globs select, listed afresh by ``poll()``.

    ``files``: the collector's OpenFiles, to read cgroup.stat through kept fds; without it
    every cgroup's directory is listed.
    """

    def __init__(
        self,
        fs: CgroupFS,
        subtree: str = "",
        include: Sequence[str] = ("**",),
        exclude: Sequence[str] = (),
        max_depth: int | None = None,
        files: OpenFiles | None = None,
    ) -> None:
        if max_depth is not None and max_depth < 0:
            raise ValueError(f"max_depth {max_depth}: expected None or a depth >= 0")
        if isinstance(include, str) or isinstance(exclude, str):
            raise TypeError("include and exclude are sequences of globs, not one string")
        self.fs = fs
        self.subtree = normalize(subtree)
        self.max_depth = max_depth
        self._files = files
        self._root = os.fspath(fs.root).rstrip("/")
        self._everything = list(include) == ["**"]
        self._include = [compile_glob(g) for g in include]
        self._exclude = [compile_glob(g) for g in exclude]
        self._prune = [compile_glob(g[: -len("/**")]) for g in exclude if g.endswith("/**")]
        self._inodes: dict[str, int] = {}
        self._kids: dict[str, list[tuple[str, int]]] = {}  # each cgroup's children last poll
        self.errors = 0  # directories that could not be listed for another reason than "gone"

    @property
    def inodes(self) -> Mapping[str, int]:
        """The inode number of each cgroup the last poll visited, selected or only walked
        through (a new number for the same path: the cgroup was re-created)."""
        return self._inodes

    def poll(self, settled: Callable[[str], bool] | None = None) -> list[str]:
        """The selected cgroups, parents before children, siblings in name order.

        A cgroup that vanishes while being listed is left out with its subtree; nothing
        here raises for a vanished cgroup. ``settled(path)`` True means no child of ``path``
        can have been made or removed since the last poll (the collector's change watch saw
        no mkdir or rmdir in it): its children are then taken from the last poll instead of
        being looked up again.
        """
        kids_of: dict[str, list[tuple[str, int]]] = {}
        inodes: dict[str, int] = {}
        out: list[str] = []
        try:
            top = os.stat(self._dir(self.subtree)).st_ino
        except OSError as e:
            if e.errno not in _GONE:
                self.errors += 1
            self._inodes = inodes
            return out
        stack: list[tuple[str, int, int]] = [(self.subtree, 0, top)]
        while stack:
            path, depth, inode = stack.pop()
            if self._prune and any(p.fullmatch(path) for p in self._prune):
                continue
            inodes[path] = inode
            if self._selected(path):
                out.append(path)
            if self.max_depth is not None and depth >= self.max_depth:
                continue
            kids = self._kids.get(path) if settled is not None and settled(path) else None
            if kids is None:
                kids = self._children(path) if self._has_children(path) else []
            kids_of[path] = kids
            stack.extend((k, depth + 1, ino) for k, ino in reversed(kids))
        self._inodes, self._kids = inodes, kids_of
        return out

    def _selected(self, path: str) -> bool:
        if not self._everything and not any(p.fullmatch(path) for p in self._include):
            return False
        return not (self._exclude and any(p.fullmatch(path) for p in self._exclude))

    def _has_children(self, path: str) -> bool:
        """False when cgroup.stat says the cgroup has no descendants (or it is gone)."""
        if self._files is None:
            return True
        try:
            stat = self._files.parsed(path, "cgroup.stat", parse_cgroup_stat)
        except CgroupGone:
            return False
        except CgroupError:
            self.errors += 1
            return True  # list the directory instead
        return stat is None or stat.nr_descendants > 0

    def _dir(self, path: str) -> str:
        return f"{self._root}/{path}" if path else self._root

    def _children(self, path: str) -> list[tuple[str, int]]:
        """(path, inode) of each child cgroup, by name; [] when ``path`` is gone."""
        prefix = f"{path}/" if path else ""
        try:
            with os.scandir(self._dir(path)) as it:
                kids = [(prefix + e.name, e.inode()) for e in it if e.is_dir(follow_symlinks=False)]
        except OSError as e:
            if e.errno not in _GONE:
                self.errors += 1
            return []
        kids.sort()
        return kids
