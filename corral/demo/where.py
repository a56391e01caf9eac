"""Where the demo runs: on this host when its cgroup2 root offers cpu, memory, io and pids,
else (or with --machine yes) in `corral machine` with the agent's port forwarded.

``choose`` is pure (the facts are passed in); ``host_facts`` reads them from this host
(/proc/self/mountinfo and the cgroup2 root's cgroup.controllers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runtime.cgroupfs import CgroupError, CgroupFS
from runtime.cgroupfs.mounts import cgroup_layout, read_mountinfo

NEEDED = ("cpu", "io", "memory", "pids")
GUEST_PORT = 9847  # the agent's port inside the machine
MACHINE_STOP_SECONDS = 30.0
PROGRESS = "corral demo: "  # how the guest's stage starts its progress lines
Choice = Literal["auto", "yes", "no"]


@dataclass(frozen=True)
class HostFacts:
    """What decides local vs machine: the layout kind, the cgroup2 mount and what its
    root's cgroup.controllers offers."""

    layout: str  # unified, hybrid, legacy or none
    cgroup2: str | None
    controllers: frozenset[str]


@dataclass(frozen=True)
class Where:
    machine: bool
    why: str  # one line for the user


def host_facts(mountinfo: str = "/proc/self/mountinfo") -> HostFacts:
    """This host's cgroup layout and the controllers of its cgroup2 root."""
    layout = cgroup_layout(read_mountinfo(mountinfo))
    offered: frozenset[str] = frozenset()
    if layout.cgroup2_mount is not None:
        try:
            offered = frozenset(CgroupFS(layout.cgroup2_mount).controllers(""))
        except (CgroupError, OSError):
            offered = frozenset()
    return HostFacts(layout.kind, layout.cgroup2_mount, offered)


def choose(choice: Choice, facts: HostFacts) -> Where:
    """Local when ``choice`` is "no", or "auto" on a host with the needed controllers."""
    missing = [c for c in NEEDED if c not in facts.controllers]
    if choice == "no":
        if missing:
            why = (
                f"--machine no: this host's cgroup2 lacks {' '.join(missing)}; "
                "the enforcer will have nothing to write there"
            )
        else:
            why = "running the demo on this host (--machine no)"
        return Where(False, why)
    if choice == "yes":
        return Where(True, "running the demo in a corral machine (--machine yes)")
    if not missing:
        return Where(False, f"this host's cgroup2 ({facts.cgroup2}) has {' '.join(NEEDED)}")
    machine = "running the demo in a corral machine with a real cgroup v2 kernel"
    if facts.cgroup2 is None:
        return Where(True, f"this host has no cgroup2 hierarchy ({facts.layout} layout): {machine}")
    if not facts.controllers:
        return Where(
            True, f"this host's cgroup2 has no controllers ({facts.layout} layout): {machine}"
        )
    return Where(
        True, f"this host's cgroup2 lacks {' '.join(missing)} ({facts.layout} layout): {machine}"
    )


def machine_argv(
    corral: str, port: int, seconds: float | None, rootfs: str, disk: str = "512M"
) -> list[str]:
    """`corral machine run` of the demo's stage, the guest's agent port forwarded to
    127.0.0.1:``port``; ``seconds`` bounds the machine's life (None: until stopped).
    ``rootfs`` was made on the host, much faster than under emulation, in the directory
    shared with the guest (--out, virtme's --rwdir: the guest's /tmp and /var are its
    own overlays, in which the host's /var/tmp does not show)."""
    argv = [corral, "machine", "run", "--memory", "2G", "--cpus", "2", "--disk", disk]
    argv += ["--forward", f"{port}:{GUEST_PORT}", "--out", os.path.dirname(rootfs)]
    if seconds is not None:
        argv += ["--timeout", f"{seconds:g}"]
    stage = [corral, "demo", "--machine", "no", "--stage-only", "--port", str(GUEST_PORT)]
    return [*argv, "--", *stage, "--rootfs", rootfs]


class Machine:
    """`corral machine run` as a child; stop() sends it SIGTERM (it kills qemu's process
    group on the way out) and waits."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._following = threading.Event()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def follow(self, say: Callable[[str], None]) -> None:
        """Pass the guest stage's progress lines ("corral demo: ...") to ``say`` until
        quiet() (a thread reading the log as it grows)."""
        self._following.set()
        threading.Thread(target=self._follow, args=(say,), daemon=True).start()

    def quiet(self) -> None:
        self._following.clear()

    def _follow(self, say: Callable[[str], None]) -> None:
        with self.log.open(errors="replace") as f:
            while self._following.is_set():
                line = f.readline()
                if not line:
                    time.sleep(0.2)
                elif line.startswith(PROGRESS) and self._following.is_set():
                    say("machine: " + line[len(PROGRESS) :].rstrip())

    def dead(self) -> str | None:
        """Why the machine is not running (with its output's last lines), or None."""
        if self.proc.poll() is None:
            return None
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        return f"the machine exited {self.proc.returncode}: " + " | ".join(tail)

    def stop(self) -> None:
        self.quiet()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(MACHINE_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
