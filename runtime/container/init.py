"""``corral run --init``: a minimal PID 1 (as tini or docker-init) in the container.

PID 1 of a pid namespace is special (pid_namespaces(7)): orphans of the namespace are
reparented to it, so it must reap them or they stay zombies; and the kernel delivers it
only the signals it has a handler for, so a command that never expected to be PID 1
(a shell, most programs) ignores SIGTERM there. This init forks the command, forwards every
catchable signal to it, reaps every child, and exits with the command's status (128+N when a
signal N killed it, as tini does); when PID 1 exits the kernel kills the rest of the namespace.

It runs after the container's hardening and under its seccomp filter, in the Python process
that set the container up: nothing here may import a module (the host's files are gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import NoReturn

from runtime.security import seccomp

# Signals an init forwards: everything catchable but those about the init itself
# (SIGCHLD: its children; SIGTTIN/SIGTTOU/SIGTSTP: job control of its own terminal).
FORWARDED = tuple(
    s
    for s in signal.valid_signals()
    if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
    and s not in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP)
)


def exit_status(status: int) -> int:
    """waitpid's status as a shell reports it: the exit code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run(program: bytes, report: int, execute: Callable[[], object]) -> NoReturn:
    """Install the seccomp ``program``, fork a child that calls ``execute`` (the command's
    execve) and be its init; never returns.

    The command's execve failure is reported on ``report`` by the command itself (the pipe
    is close-on-exec); this process closes its copy so that the shim sees EOF on success."""
    with open("/proc/self/comm", "w") as comm:  # what ps shows as its COMMAND (proc(5))
        comm.write("corral-init")
    seccomp.install_filter(program)
    every = set(signal.valid_signals())
    signal.pthread_sigmask(signal.SIG_BLOCK, every)  # no signal lost before the handlers
    child = os.fork()
    if child == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # execve keeps the mask
        execute()
        os._exit(1)
    os.close(report)

    def forward(sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    reap(child)


def reap(child: int) -> NoReturn:
    """Wait for every child; exit with ``child``'s status once it is gone."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            os._exit(exit_status(status))
