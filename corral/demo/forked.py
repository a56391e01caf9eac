"""`corral ARGS...` in a forked child of this process: the CLI's own entry point and argv,
as a separate process, without a new interpreter.

Why not exec: in `corral machine` every Python start-up imports its modules over 9p under
TCG emulation, measured at 15 s for `corral --version` and 26 s for `corral run`'s imports;
the demo starts seven such commands at once. A child forked after ``preload()`` starts with
those modules already imported, so it does only the command's own work.

The child resets the signal handlers this process installed, takes /dev/null as stdin and
a log file as stdout and stderr, and always leaves through os._exit: it never runs this
process's cleanup (the stage's teardown) on the way out.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

# What the commands the demo runs import when they run (corral.cli is lazy per verb).
PRELOAD = (
    "corral.cli",
    "corral.cli.container_run",
    "corral.cli.containers",
    "corral.cli.serve",
    "enforce.audit",
    "enforce.loop",
    "enforce.policy",
)


def preload() -> None:
    """Import what the forked commands need, once, in this process."""
    for module in PRELOAD:
        importlib.import_module(module)


class Child:
    """`corral ARGS...` forked; output to ``log``. Popen's poll/wait/send_signal."""

    def __init__(self, args: Sequence[str], log: Path, *, new_session: bool = False) -> None:
        self.args, self.log = list(args), log
        self.returncode: int | None = None
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _child(self.args, log, new_session)  # never returns

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; TimeoutError when it is still running after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"corral {' '.join(self.args[:2])} still running")
            time.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _child(args: list[str], log: Path, new_session: bool) -> None:
    code = 1
    try:
        if new_session:
            os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # The parent's sys.stdout may not be fd 1 (a test runner's capture): write to ours.
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        from corral.cli import main

        main(args, prog_name="corral")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
