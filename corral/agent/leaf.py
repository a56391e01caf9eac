"""The agent's own leaf cgroup, as systemd's DelegateSubgroup= does for a service.

cgroup v2's "no internal processes" rule: a non-root cgroup that holds processes cannot
enable controllers for its children (a write to its cgroup.subtree_control fails with
EBUSY). An agent started by systemd with Delegate=yes lives in the service's cgroup itself,
so it first moves into a leaf child (``agent``); the service's cgroup is then free to hand
controllers to siblings. The move is one write of the pid to the leaf's cgroup.procs, done
before any thread starts (a thread group moves as a whole when written by its tgid anyway).
"""

from __future__ import annotations

import contextlib
import errno
import os

from enforce.loop import own_cgroup
from runtime.cgroupfs import CgroupError, CgroupFS

DEFAULT_LEAF = "agent"


def enter_leaf(name: str, proc: str = "/proc/self/cgroup") -> tuple[bool, str]:
    """Move this process into ``name`` below its cgroup v2 cgroup (in the real cgroup2
    mount, whatever --cgroup-root says). Returns (moved, what happened, for the log). Never
    raises: a failure leaves the process where it was and a created leaf removed."""
    if not name:
        return False, "own leaf cgroup disabled (cgroup_leaf = '')"
    current = own_cgroup(proc)
    if current is None:
        return False, f"no cgroup v2 membership in {proc}: running where it is"
    if current == "":
        return False, "in the root cgroup, which may hold processes: staying there"
    if current.rsplit("/", 1)[-1] == name:
        return False, f"already in its leaf cgroup /{current}"
    try:
        root = CgroupFS.discover().root
    except CgroupError as e:
        return False, f"cannot move into a leaf cgroup: {e}; running in /{current}"
    leaf = os.path.join(root, current, name)
    try:
        os.mkdir(leaf)
        created = True
    except FileExistsError:
        created = False
    except OSError as e:
        return False, _failed(leaf, "mkdir", e, current)
    try:
        with open(os.path.join(leaf, "cgroup.procs"), "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
    except OSError as e:
        if created:
            with contextlib.suppress(OSError):  # another process went in meanwhile: leave it
                os.rmdir(leaf)
        return False, _failed(leaf, "cgroup.procs write", e, current)
    return True, f"moved from /{current} into its leaf cgroup /{current}/{name}"


def _failed(path: str, step: str, e: OSError, current: str) -> str:
    why = {
        errno.EBUSY: "the parent has controllers enabled for its children and the leaf "
        "cannot take a process (no internal processes)",
        errno.EACCES: "permission denied (not delegated to this user?)",
        errno.EPERM: "not permitted",
        errno.EROFS: "the cgroup filesystem is read-only",
        errno.EOPNOTSUPP: "not supported by this cgroup",
    }.get(e.errno or 0, e.strerror or str(e))
    name = errno.errorcode.get(e.errno or 0, "error")
    return f"cannot move into {path} ({step}: {name}: {why}); running in /{current}"
