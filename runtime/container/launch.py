"""Starting the shim before the container exists, so that its start overlaps the CLI's.

A container start waits for two Python start-ups in a row: the CLI's (its imports: the
spec, state, cgroup and OCI modules) and then the shim's (a fresh ``python -I -S``, which
forks the starter, which imports the container setup). ``launch`` starts the shim first,
from a module that imports only os: the shim detaches, forks its starter and the starter
imports the setup modules while the CLI still imports, validates and creates the state
and the cgroup; ``Launched.send`` then hands the shim the container (its id, cgroup,
log and ProcessConfig JSON) on its stdin. A CLI that fails before ``send`` closes the pipe
(``cancel``, or its own exit): the shim and the starter see EOF and exit having done
nothing.

The shim is started as ``python -I -S shim.py STATE_DIR SYNC_FD FLAGS`` (the state
directory in its command line: tests and operators find a state directory's shims by it);
its stdin carries ``ID\\0CGROUP\\0CGROUP_DIR\\0LOG\\0CONFIG`` (CGROUP relative to the cgroup2
root, CGROUP_DIR its absolute directory) (no field holds a NUL: ids and paths
cannot, and JSON escapes control characters).
"""

from __future__ import annotations

import os
import sys

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py")


class Launched:
    """A shim started by ``launch``, waiting for its container on ``stdin``; ``sync`` is
    the read end of its sync pipe ("started PID", "error CODE MESSAGE", "exit CODE")."""

    def __init__(self, pid: int, stdin: int, sync: int, state_dir: str, flags: str) -> None:
        self.pid, self.stdin, self.sync = pid, stdin, sync
        self.state_dir, self.flags = state_dir, flags
        self.sent = False  # the whole request written: the shim goes on without us

    def send(self, container_id: str, cgroup: str, cgroup_dir: str, log: str, config: bytes) -> int:
        """The container to the shim; the exit status of the shim's first process (it
        exits once detached: 0, or the interpreter's failure). The sync pipe stays open."""
        fields = b"\0".join(s.encode() for s in (container_id, cgroup, cgroup_dir, log))
        data = memoryview(fields + b"\0" + config)
        try:
            while data:
                data = data[os.write(self.stdin, data) :]
            self.sent = True
        except BrokenPipeError:
            pass  # the shim died: its status says why
        finally:
            os.close(self.stdin)
            self.stdin = -1
        return self.reap()

    def take_sync(self) -> int:
        """The sync pipe's read end, now the caller's to close (``cancel`` leaves it)."""
        sync, self.sync = self.sync, -1
        return sync

    def reap(self) -> int:
        if self.pid <= 0:
            return 0
        status = os.waitpid(self.pid, 0)[1]
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def cancel(self) -> None:
        """No container after all: EOF on the shim's stdin, the first process reaped, and,
        unless the request went out whole, EOF awaited on the sync pipe: the shim and its
        starter have exited (having done nothing) when this returns, so that a failed
        `corral run` leaves no process behind. The sync pipe is closed unless taken.
        Idempotent."""
        if self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1
        self.reap()
        if self.sync >= 0:
            if not self.sent:  # the shim closes its end when it exits
                while os.read(self.sync, 512):
                    pass
            os.close(self.sync)
            self.sync = -1


def shim_flags(*, attach: bool, rm: bool) -> str:
    return ",".join(f for f, on in (("attach", attach), ("rm", rm)) if on) or "-"


def launch(state_dir: str, *, attach: bool, rm: bool) -> Launched:
    """Start the shim for a container of ``state_dir`` (``attach``: a foreground run, whose
    output the shim copies to this process's stdout and stderr; ``rm``: removed on exit).
    posix_spawn(3) in a new session, with only stdin, stdout, stderr and the sync pipe's
    write end (every other descriptor of a Python process is close-on-exec)."""
    state_dir = os.path.abspath(state_dir)
    flags = shim_flags(attach=attach, rm=rm)
    stdin_r, stdin_w = os.pipe()
    sync_r, sync_w = os.pipe()
    os.set_inheritable(sync_w, True)
    actions: list[tuple[int, int, int] | tuple[int, int, str, int, int]]
    actions = [(os.POSIX_SPAWN_DUP2, stdin_r, 0)]
    if not attach:
        for target in (1, 2):
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
    argv = [sys.executable, "-I", "-S", SHIM, state_dir, str(sync_w), flags]
    try:
        pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setsid=True)
    except BaseException:
        for fd in (stdin_w, sync_r):
            os.close(fd)
        raise
    finally:
        os.close(stdin_r)
        os.close(sync_w)
    return Launched(pid, stdin_w, sync_r, state_dir, flags)
