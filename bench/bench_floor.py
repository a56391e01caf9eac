"""The C floor (floor_read.c) as a co-process: one pass per request, timed inside C."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FloorPass:
    seconds: float
    files: int
    bytes: int
    missing: int


class Floor:
    """``binary`` started once over ``dirs`` x ``files``; ``run()`` times one pass."""

    def __init__(self, binary: str, dirs: Sequence[str], files: Sequence[str]) -> None:
        self.files = list(files)
        fd, self._list = tempfile.mkstemp(prefix="floor-", suffix=".list")
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{d}\n" for d in dirs))
        self._proc = subprocess.Popen(
            [binary, self._list, *files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def run(self) -> FloorPass:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("go\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"floor_read exited with status {self._proc.wait()}")
        ns, files, size, missing = (int(w) for w in line.split())
        return FloorPass(ns / 1e9, files, size, missing)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()
        os.unlink(self._list)
