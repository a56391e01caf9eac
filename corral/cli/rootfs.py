"""`corral rootfs busybox|debian DIR`: root filesystems for `corral run`.

Exit status 0 when DIR was made, 1 when building failed (nothing is left behind), 2 for bad
usage (a bad suite, package name or mirror, a non-empty DIR without --force). Progress goes
to stderr: one redrawn line with a bar on a terminal, one line per finished phase otherwise.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from runtime.rootfs import InvalidArgument, RootfsError
from runtime.rootfs.busybox import BUSYBOX, build_busybox
from runtime.rootfs.debian import VARIANTS, build_debian, make_spec
from runtime.rootfs.progress import Event

BAR = 24


@click.group()
def rootfs() -> None:
    """Make root filesystems for `corral run`."""


@rootfs.command("busybox")
@click.argument("directory", type=click.Path())
@click.option("--force", is_flag=True, help="Replace DIR when it exists and is not empty.")
@click.option("--busybox", "binary", default=BUSYBOX, show_default=True, help="A static busybox.")
def busybox_cmd(directory: str, force: bool, binary: str) -> None:
    """A tiny root filesystem: a static busybox, its applets, /etc, the usual directories."""
    with _errors():
        made = build_busybox(directory, force=force, busybox=binary)
    click.echo(
        f"corral rootfs: made {made.path}: busybox with {made.applets} applets, "
        f"{_mib(made.size_bytes)}"
    )


@rootfs.command("debian")
@click.argument("directory", type=click.Path())
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite or codename.")
@click.option(
    "--include",
    multiple=True,
    metavar="PKG,...",
    help="Also install these packages (repeatable, comma-separated).",
)
@click.option("--mirror", help="Debian archive URL [default: the one apt uses here].")
@click.option(
    "--variant",
    type=click.Choice(VARIANTS),
    default="minbase",
    show_default=True,
    help="debootstrap's package set: minbase is essential packages and apt.",
)
@click.option("--force", is_flag=True, help="Replace DIR when it exists and is not empty.")
def debian_cmd(
    directory: str,
    suite: str,
    include: tuple[str, ...],
    mirror: str | None,
    variant: str,
    force: bool,
) -> None:
    """A Debian root filesystem made by debootstrap, with progress."""
    with _errors():
        spec = make_spec(suite, include, mirror, variant)
        click.echo(f"corral rootfs: debootstrap {spec.suite} ({spec.variant}) from {spec.mirror}")
        view = ProgressView(sys.stderr.isatty())
        try:
            made = build_debian(directory, spec, force=force, on_event=view)
        except BaseException:
            view.close(stopped=True)
            raise
        view.close()
    click.echo(
        f"corral rootfs: made {made.path}: Debian {spec.suite}, {made.packages} packages, "
        f"{_mib(made.size_bytes)}, debootstrap took {made.seconds:.0f} s"
    )


@contextmanager
def _errors() -> Iterator[None]:
    """Errors as `corral rootfs: ...` on stderr: 2 for bad usage, 1 for failures; SIGTERM
    and ctrl-C unwind like errors, so the staging directory is removed."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    except InvalidArgument as e:
        _fail(str(e), 2)
    except RootfsError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        _fail("interrupted; nothing was made", 130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> NoReturn:
    raise RootfsError("terminated (SIGTERM); nothing was made")


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"corral rootfs: {message}", err=True)
    raise SystemExit(status)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


class ProgressView:
    """debootstrap's Events drawn on stderr."""

    def __init__(self, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.tty = tty
        self.clock = clock
        self.last: Event | None = None
        self.since = clock()
        self.first_done = 0  # the count when this stretch of a phase began

    def __call__(self, event: Event) -> None:
        if event.kind == "warning":
            self._clear()
            click.echo(f"  warning: {event.text}", err=True)
        if event.kind != "info":
            return
        if self.last is None or event.phase != self.last.phase:
            if self.last is not None:
                self._finish(self.last)
            self.since = self.clock()
            self.first_done = event.done
        self.last = event
        if self.tty and event.phase != "done":
            width = shutil.get_terminal_size().columns - 1
            line = "\r\x1b[K" + self.render(event)[:width]
            click.echo(line, err=True, nl=False, color=True)  # color: keep the escape

    def close(self, stopped: bool = False) -> None:
        """End the display; ``stopped`` says where a failed or interrupted run stopped."""
        if self.last is not None and (stopped or self.last.phase != "done"):
            self._clear()
            suffix = " (stopped)" if stopped else ""
            click.echo(self.summary(self.last) + suffix, err=True)
        self.last = None

    @staticmethod
    def render(event: Event) -> str:
        """``unpack    [######------]  45/88 libc6``; a bare count while the total is unknown."""
        head = f"  {event.phase:<9} "
        package = event.package or ""
        if event.total is None:
            return head + (f"{event.done} packages {package}" if event.done else event.text)
        filled = BAR * min(event.done, event.total) // max(event.total, 1)
        bar = "#" * filled + "-" * (BAR - filled)
        return head + f"[{bar}] {event.done:>3}/{event.total} {package}"

    def summary(self, event: Event) -> str:
        seconds = self.clock() - self.since
        if event.phase == "prepare":
            return f"  {event.phase:<9} {seconds:.1f} s"
        count = f"{event.done}/{event.total}" if event.total is not None else str(event.done)
        return f"  {event.phase:<9} {count} packages, {seconds:.1f} s"

    def _finish(self, event: Event) -> None:
        """The phase's line; none for a stretch that handled no package (minbase's empty
        base set is "Unpacking the base system..." and nothing after it)."""
        self._clear()
        if event.phase == "prepare" or event.done > self.first_done:
            click.echo(self.summary(event), err=True)

    def _clear(self) -> None:
        if self.tty:
            click.echo("\r\x1b[K", err=True, nl=False, color=True)
