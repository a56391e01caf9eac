"""One run of `corral demo`: the stage here or in a machine, then the dashboard or the
headless summary, then teardown (also on Ctrl-C, SIGTERM and errors).

- here: the Stage (agent on 127.0.0.1:PORT and the containers) in this process's children;
- in a machine: `corral machine run ... -- corral demo --stage-only` with the guest's agent
  port forwarded to 127.0.0.1:PORT; the dashboard or the summary read it from the host, and
  the machine is stopped (SIGTERM; it kills qemu) at the end;
- --stage-only (inside the machine): the Stage on 0.0.0.0:PORT until SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from corral.demo.stage import (
    DemoError,
    Stage,
    corral_command,
    run_corral,
    wait_containers,
    wait_http,
)
from corral.demo.where import Choice, Machine, choose, host_facts, machine_argv

LOCAL_READY_SECONDS = 120.0
MACHINE_READY_SECONDS = 480.0  # boot under TCG, then the stage's own set-up
PROGRESS_SECONDS = 15.0
Say = Callable[[str], None]
Alive = Callable[[], str | None]


@dataclass(frozen=True)
class Options:
    headless: bool = False
    duration: float | None = None  # headless: how long the workloads run before the summary
    port: int = 9847
    machine: Choice = "auto"
    keep: bool = False
    stage_only: bool = False
    rootfs: str | None = None  # --stage-only: a root filesystem made by the host


def run_demo(opts: Options, say: Say, out: Say) -> None:
    """The whole demo; DemoError says why it could not run. ``say`` is for progress,
    ``out`` for the summary."""
    with _sigterm_exits(), _work_dir(opts.keep, say) as work:
        if opts.stage_only:
            _stage_only(work, opts.port, say, opts.rootfs)
            return
        where = choose(opts.machine, host_facts())
        say(where.why)
        _check_port(opts.port)
        if where.machine:
            _in_machine(work, opts, say, out)
        else:
            _here(work, opts, say, out)


def _here(work: Path, opts: Options, say: Say, out: Say) -> None:
    url = f"http://127.0.0.1:{opts.port}"
    with Stage(work, f"127.0.0.1:{opts.port}", say) as stage:
        wait_containers(url, stage.agent_dead, LOCAL_READY_SECONDS)
        _show(url, opts, stage.notes, stage.agent_dead, say, out)


def _in_machine(work: Path, opts: Options, say: Say, out: Say) -> None:
    from runtime.machine.requirements import find_requirements

    req = find_requirements()
    if not req.ready:
        raise DemoError(
            "the machine cannot start: " + "; ".join(req.missing)
            + ". Run `corral machine setup` (`make demo` does it)."
        )  # fmt: skip
    url = f"http://127.0.0.1:{opts.port}"
    bound = None if opts.duration is None else opts.duration + 600
    log, rootfs = work / "machine.log", work / "rootfs"
    say("making a busybox root filesystem for the machine (corral rootfs busybox)")
    run_corral("rootfs", "busybox", str(rootfs))
    machine = Machine(machine_argv(corral_command(), opts.port, bound, str(rootfs)), log)
    try:
        say(f"booting the machine (2 CPUs, 2G, a 512M scratch disk); its output: {log}")
        machine.follow(say)
        wait_http(f"{url}/healthz", machine.dead, MACHINE_READY_SECONDS)
        say(f"the agent in the machine answers at {url}; waiting for the containers")
        wait_containers(url, machine.dead, MACHINE_READY_SECONDS)
        machine.quiet()
        notes = ["the containers run in the machine; demo-io-writer writes to its scratch disk "
                 "(ext4 on /dev/vda), capped by an io.max wbps=4M rule"]  # fmt: skip
        _show(url, opts, notes, machine.dead, say, out)
    finally:
        say("stopping the machine")
        machine.stop()


def _show(url: str, opts: Options, notes: Sequence[str], alive: Alive, say: Say, out: Say) -> None:
    if not opts.headless:
        from dashboards.tui.app import CorralTop
        from dashboards.tui.sources.remote import RemoteSource

        CorralTop(RemoteSource(url, 1.0)).run()  # the app closes the source when it exits
        return
    seconds = opts.duration if opts.duration is not None else 60.0
    say(f"all containers are running; watching for {seconds:g} s (dashboard: corral top --url "
        f"{url})")  # fmt: skip
    began = time.monotonic()
    next_note = began + PROGRESS_SECONDS
    while (left := began + seconds - time.monotonic()) > 0:
        dead = alive()
        if dead is not None:
            raise DemoError(dead)
        if time.monotonic() >= next_note:
            say(f"{left:.0f} s left")
            next_note += PROGRESS_SECONDS
        time.sleep(min(1.0, left))
    from corral.demo.summary import SummaryError, collect, format_summary

    try:
        captured = collect(url)
        out(format_summary(captured, notes))
    except SummaryError as e:
        raise DemoError(str(e)) from None


def _stage_only(work: Path, port: int, say: Say, rootfs: str | None) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with Stage(work, f"0.0.0.0:{port}", say, Path(rootfs) if rootfs else None) as stage:
        say(f"stage ready: the agent listens on 0.0.0.0:{port}")
        while not stop.wait(1.0):
            dead = stage.agent_dead()
            if dead is not None:
                raise DemoError(dead)


def _check_port(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise DemoError(
                f"--port {port}: 127.0.0.1:{port} cannot be used ({e.strerror}): give a free port"
            ) from None


@contextmanager
def _work_dir(keep: bool, say: Say) -> Iterator[Path]:
    """A fresh directory for the root filesystem, data, policy and logs (on disk, under
    /var/tmp where it exists: page cache there is reclaimable, unlike tmpfs)."""
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    work = Path(tempfile.mkdtemp(prefix="corral-demo-", dir=base))
    try:
        yield work
    finally:
        if keep:
            say(f"kept {work} (policy, audit log, agent or machine log)")
        else:
            shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit (143) so that teardown runs, as Ctrl-C does."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
