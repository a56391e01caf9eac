"""`corral record FILE`: poll every cgroup and write the raw samples to a recording.

The recording (monitor.recording) replays as Snapshots for the dashboard and the enforcer's
simulator. SIGINT and SIGTERM stop it cleanly: the poll in progress is finished and written,
then the file is closed. With ``--duration`` on a terminal, a countdown shows on stderr.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from types import FrameType
from typing import Any

import click

from corral.cli.durations import parse_duration
from corral.cli.selection import collector_options
from monitor.collector import Collector, CollectorConfig
from monitor.recording import RecordingError, RecordingWriter
from monitor.recording.recorder import Progress, record
from runtime.cgroupfs import CgroupError, CgroupFS
from runtime.cgroupfs.openfiles import FD_RESERVE, raise_fd_rlimit


class _Stopper:
    """SIGINT/SIGTERM set ``signal``; ``wait`` sleeps until a timeout or such a signal (the
    handler only records it, so a frame being written is never cut short)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_fd = signal.set_wakeup_fd(self._w)
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    def wait(self, seconds: float) -> bool:
        if self.signal is None and seconds > 0:
            # poll(2), not select(2): the collector may hold fds numbered past 1024.
            waiter = select.poll()
            waiter.register(self._r, select.POLLIN)
            waiter.poll(seconds * 1000)
        while True:
            try:
                if not os.read(self._r, 512):
                    break
            except BlockingIOError:
                break
        return self.signal is not None

    def close(self) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._r)
        os.close(self._w)


def _countdown(p: Progress) -> None:
    left = f", {p.remaining:.0f} s left" if p.remaining is not None else ""
    size = f"{p.bytes_written / 1e6:.1f} MB"
    line = f"\rcorral record: {p.frames} frames, {p.cgroups} cgroups, {size}{left}  "
    click.echo(line, nl=False, err=True)


def _collector(root: str | None, config: CollectorConfig) -> tuple[Collector, dict[str, Any]]:
    try:
        fs = CgroupFS(root) if root else CgroupFS.discover()
    except CgroupError as e:
        raise click.ClickException(str(e)) from None
    meta = {
        "cgroup_root": str(fs.root),
        "subtree": config.subtree,
        "include": list(config.include),
        "exclude": list(config.exclude),
        "max_depth": config.max_depth,
    }
    return Collector(fs, config), meta


@click.command("record")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--interval", default="1s", show_default=True, help="Time between polls.")
@click.option("--duration", help="Stop after this long (default: until SIGINT/SIGTERM).")
@collector_options
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def record_cmd(
    file: str,
    interval: str,
    duration: str | None,
    cgroup_root: str | None,
    subtree: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    max_depth: int | None,
    fd_limit: int,
    recheck_every: int,
    force: bool,
) -> None:
    """Poll every cgroup each INTERVAL and write the raw samples to FILE, a compact
    recording that `monitor.recording.replay` (the dashboard, the simulator) reads back."""
    every = parse_duration(interval, "--interval")
    seconds = parse_duration(duration, "--duration", zero_ok=True) if duration is not None else None
    try:
        config = CollectorConfig(
            subtree, include or ("**",), exclude, max_depth, fd_limit, recheck_every
        )
    except (ValueError, CgroupError) as e:
        raise click.ClickException(str(e)) from None
    raise_fd_rlimit(fd_limit + FD_RESERVE)
    collector, meta = _collector(cgroup_root, config)
    try:
        writer = RecordingWriter(file, meta={**meta, "interval_seconds": every}, overwrite=force)
    except RecordingError as e:
        collector.close()
        raise click.ClickException(str(e)) from None
    _run(collector, writer, every, seconds)


def _run(
    collector: Collector, writer: RecordingWriter, interval: float, duration: float | None
) -> None:
    """Record until the duration or a signal; close everything; say what was written."""
    stopper = _Stopper()
    tty = sys.stderr.isatty()
    try:
        with writer:
            done = record(
                collector,
                writer,
                interval=interval,
                duration=duration,
                wait=stopper.wait,
                progress=_countdown if tty else lambda p: None,
            )
    except RecordingError as e:
        raise click.ClickException(str(e)) from None
    finally:
        stopper.close()
        collector.close()
    _summary(writer.path, done, writer, stopper.signal, tty)


def _summary(
    file: str, done: Progress, writer: RecordingWriter, signum: int | None, tty: bool
) -> None:
    text = f"corral record: {file}: {done.frames} frames in {done.elapsed:.1f} s"
    text += f", {writer.bytes_written} bytes"
    per = writer.bytes_per_cgroup_sample
    if per is not None:
        text += f" ({per:.1f} bytes per cgroup per sample)"
    if signum is not None:
        text += f"; stopped by {signal.Signals(signum).name}"
    click.echo(("\r" if tty else "") + text, err=True)
