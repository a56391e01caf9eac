"""corral.demo.forked: `corral ARGS` in a forked child, with its status and output, never
running the parent's code on the way out."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from corral import __version__
from corral.demo.forked import Child


def test_a_command_runs_with_its_status_and_output(tmp_path: Path) -> None:
    ok = Child(["--version"], tmp_path / "version.log")
    assert ok.wait(30) == 0
    assert ok.output() == f"corral, version {__version__}\n"
    bad = Child(["run", "--no-such-option"], tmp_path / "bad.log")
    assert bad.wait(30) == 2  # click's usage error
    assert "No such option '--no-such-option'" in bad.output()


def test_the_child_never_returns_into_the_parent(tmp_path: Path) -> None:
    """A child that raised would otherwise go on running the caller's code (the stage's
    teardown): here, writing a marker file."""
    marker = tmp_path / "marker"
    child = Child(["demo", "--port", "0"], tmp_path / "demo.log")  # bad usage: exits 2
    with marker.open("a") as f:  # a child that came back here would add its own line
        f.write(f"{os.getpid()}\n")
    assert child.wait(30) == 2
    assert marker.read_text() == f"{os.getpid()}\n"


def test_wait_times_out_and_signals_reach_the_child(tmp_path: Path) -> None:
    child = Child(["serve", "--no-enforce", "--listen", "127.0.0.1:0"], tmp_path / "serve.log")
    with pytest.raises(TimeoutError):
        child.wait(0.2)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    assert child.poll() == -signal.SIGKILL
