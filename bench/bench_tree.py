"""The benchmark's cgroup tree: BASE/gNN/cNNN leaves, each holding one live process.

cpu, memory, io and pids are enabled from the root down, so every leaf has every file the
collector reads. Each process is busybox ``sleep``, moved into its leaf by writing "0" to
the leaf's cgroup.procs between fork and exec, so it never runs anywhere else.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.cgroupfs import CgroupFS

CONTROLLERS = ("cpu", "memory", "io", "pids")


@dataclass
class Tree:
    fs: CgroupFS
    base: str
    groups: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def dirs(self, under: str | None = None) -> list[str]:
        """Absolute directories of the cgroups below ``under`` (default: the base), the
        base or group itself included, parents first: what the collector's walk finds."""
        top = under or self.base
        paths = [p for p in [self.base, *self.groups, *self.leaves] if _within(p, top)]
        return [os.path.join(str(self.fs.root), p) for p in sorted(paths)]


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _joiner(procs_file: str) -> Callable[[], None]:
    def join() -> None:
        fd = os.open(procs_file, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return join


def build(fs: CgroupFS, base: str, groups: int, per_group: int, busybox: str) -> Tree:
    """Make the tree and start one ``sleep`` in every leaf."""
    fs.enable_controllers("", CONTROLLERS)
    tree = Tree(fs, base)
    fs.create(base)
    fs.enable_controllers(base, CONTROLLERS)
    for g in range(groups):
        group = f"{base}/g{g:02d}"
        fs.create(group)
        fs.enable_controllers(group, CONTROLLERS)
        tree.groups.append(group)
        for c in range(per_group):
            leaf = f"{group}/c{c:03d}"
            fs.create(leaf)
            tree.leaves.append(leaf)
    for leaf in tree.leaves:
        procs_file = str(fs.path(leaf) / "cgroup.procs")
        proc = subprocess.Popen(
            [busybox, "sleep", "100000"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_joiner(procs_file),
        )
        tree.procs.append(proc)
    return tree


def destroy(tree: Tree) -> None:
    """cgroup.kill the whole tree, reap the processes, remove the cgroups."""
    if tree.fs.exists(tree.base):
        tree.fs.kill(tree.base)
    for proc in tree.procs:
        proc.wait()
    deadline = time.monotonic() + 30
    while tree.fs.exists(tree.base):
        try:
            tree.fs.remove(tree.base, recursive=True)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
