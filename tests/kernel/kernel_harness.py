"""Helpers shared by the kernel tests: workloads started inside a cgroup, bounded waits, and
the figures each tolerance check measured (printed at the end of the run by conftest.py).

Every workload is a child process that joins its cgroup before exec (a ``preexec_fn`` writes
its own pid to cgroup.procs), so none of its work is ever accounted outside the cgroup.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.core import read_cgroup_events

T = TypeVar("T")

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
# -I -S: no site-packages, no environment, no cwd on sys.path. The snippets use the standard
# library only, and skipping site saves seconds of 9p reads per start under TCG.
PYTHON = [sys.executable, "-I", "-S", "-u"]
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20

# Under TCG a Python start takes 1-20 s depending on how busy the host is.
START_TIMEOUT = 90.0


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last: {value!r})"
            )
        time.sleep(interval)


def populated(fs: CgroupFS, cgroup: str) -> bool:
    """cgroup.events ``populated``: any live process in the subtree."""
    events = read_cgroup_events(fs, cgroup)
    assert events is not None, f"{cgroup}: no cgroup.events"
    return events.populated


def frozen(fs: CgroupFS, cgroup: str) -> bool:
    events = read_cgroup_events(fs, cgroup)
    assert events is not None, f"{cgroup}: no cgroup.events"
    return events.frozen


def gone_or_zombie(pid: int) -> bool:
    """True when ``pid`` no longer runs: /proc has no entry, or it is a zombie (state Z)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def cgroup_of(pid: int) -> str:
    """The cgroup v2 path of ``pid`` from /proc/PID/cgroup, without the leading slash."""
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip().lstrip("/")
    raise AssertionError(f"pid {pid}: no cgroup v2 line in /proc/{pid}/cgroup")


def python_argv(code: str, *args: str) -> list[str]:
    return [*PYTHON, "-c", textwrap.dedent(code), *args]


def busybox_sh(script: str) -> list[str]:
    return [BUSYBOX, "sh", "-c", script]


class Workload:
    """A process started inside a cgroup, talking in lines over its stdin and stdout.

    stderr is merged into stdout so that a traceback shows up in the transcript that every
    failed expectation quotes.
    """

    def __init__(self, argv: Sequence[str], fs: CgroupFS, cgroup: str) -> None:
        self.argv = list(argv)
        self.cgroup = cgroup

        def join_cgroup() -> None:  # runs in the child between fork and exec
            fs.move(os.getpid(), cgroup)

        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            preexec_fn=join_cgroup,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._out = self.proc.stdout
        self._in = self.proc.stdin
        self._partial = b""
        self._lines: list[str] = []
        self.transcript: list[str] = []
        self._eof = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: str) -> None:
        self._in.write(line.encode() + b"\n")

    def _fill(self, timeout: float) -> bool:
        """Read what is available within ``timeout``; False at end of output."""
        if self._eof:
            return False
        ready, _, _ = select.select([self._out], [], [], max(timeout, 0))
        if not ready:
            return True
        chunk = os.read(self._out.fileno(), 65536)
        if not chunk:
            self._eof = True
            return False
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace")
            self._lines.append(line)
            self.transcript.append(line)
        return True

    def expect(self, tag: str, timeout: float = 30.0) -> list[str]:
        """The words after the next line that starts with ``tag``; earlier lines are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            while self._lines:
                words = self._lines.pop(0).split()
                if words[:1] == [tag]:
                    return words[1:]
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                status = self.proc.poll()
                raise AssertionError(
                    f"{self.argv[0]} (pid {self.pid}): no {tag!r} line within {timeout:g} s "
                    f"(exit status {status}); output so far: {self.transcript[-20:]}"
                )

    def drain(self) -> list[str]:
        """Every complete line available right now."""
        while not self._eof and select.select([self._out], [], [], 0)[0]:
            self._fill(0)
        lines, self._lines = self._lines, []
        return lines

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.argv[0]} (pid {self.pid}) still running after {timeout:g} s; "
                f"output: {self.transcript[-20:]}"
            ) from None

    def stop(self) -> None:
        """Kill (if still running), reap, and close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(30)
        finally:
            self._in.close()
            self._out.close()


Spawn = Callable[..., Workload]


class Figures:
    """What a test measured against what it expected; conftest prints them after the run."""

    def __init__(self, test: str, sink: list[tuple[str, str]]) -> None:
        self.test = test
        self._sink = sink

    def note(self, text: str) -> None:
        self._sink.append((self.test, text))

    def within(
        self, what: str, observed: float, expected: float, rel: float, unit: str = ""
    ) -> None:
        """Record, then assert |observed - expected| <= rel * expected."""
        off = (observed - expected) / expected if expected else float("inf")
        verdict = "ok" if abs(off) <= rel else "OUT OF TOLERANCE"
        self.note(
            f"{what}: observed {observed:,.0f}{unit} vs expected {expected:,.0f}{unit} "
            f"({off:+.1%}, tolerance ±{rel:.0%}) {verdict}"
        )
        assert abs(off) <= rel, (
            f"{what}: expected {expected:,.0f}{unit} ±{rel:.0%}, "
            f"observed {observed:,.0f}{unit} ({off:+.1%})"
        )
