"""`corral top --replay` driven in tmux as a person would: a 100x30 terminal, keys sent with
`tmux send-keys`, the screen read back with `tmux capture-pane -p` and checked for what a
person would look for. The recording was captured from the real 6.1 kernel in `corral
machine` (tests/fixtures/recordings/README.md): web.service's cpu.max goes from 0.2 to 0.5
about 30 s in; batch.service grows past memory.high 48M; forky.service hits pids.max 8.

Its own tmux server (-L) is used and killed afterwards, whatever happens.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.recording import Recording

ROOT = Path(__file__).resolve().parent.parent.parent
RECORDING = ROOT / "tests" / "fixtures" / "recordings" / "demo.corral"
PYTHON = sys.executable
WAIT_SECONDS = 20.0
WEB_CPU = r"web\.service +service +{} "  # the CPU column, in cores


def top_command() -> list[str]:
    """`python -m corral top` once the command is wired into the CLI; until then the click
    command itself (corral.cli.top is the same code either way)."""
    wired = subprocess.run(
        [PYTHON, "-m", "corral", "top", "--help"], cwd=ROOT, capture_output=True, timeout=60
    )
    if wired.returncode == 0:
        return [PYTHON, "-m", "corral", "top"]
    return [PYTHON, "-c", "from corral.cli.top import top; top()"]


class Terminal:
    """A detached tmux session on a private server."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr}"
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        for key in keys:  # one at a time, as fingers do
            self.tmux("send-keys", "-t", "top", key)
            time.sleep(0.15)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "top", "-l", text)

    def wait(self, ok: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            screen = self.screen()
            if ok(screen):
                return screen
            if time.monotonic() > deadline:
                size = self.tmux("display", "-p", "-t", "top", "#{window_width}x#{window_height}")
                pytest.fail(f"never saw {what}; the screen ({size.strip()}):\n{screen}")
            time.sleep(0.1)

    def shows(self, *texts: str) -> str:
        return self.wait(lambda s: all(t in s for t in texts), " and ".join(map(repr, texts)))

    def frame(self, header: str, row: str) -> str:
        """The screen once it shows ``header`` and a table line matching ``row``."""
        return self.wait(
            lambda s: header in s and re.search(row, s) is not None, f"{header!r} with {row!r}"
        )

    def line(self, screen: str, text: str) -> str:
        found = [ln for ln in screen.splitlines() if text in ln]
        assert found, f"no line with {text!r}:\n{screen}"
        return found[0]


@pytest.fixture
def term() -> Iterator[Terminal]:
    t = Terminal(f"corral-e2e-{os.getpid()}")
    command = shlex.join([*top_command(), "--replay", str(RECORDING)])
    # Under pytest the pane inherited COLUMNS=80 LINES=24, which Textual (shutil's terminal
    # size) prefers to the pty's real 100x30: the terminal's own size is what a person has.
    shell = (
        f"unset COLUMNS LINES; cd {shlex.quote(str(ROOT))} && {command};"
        ' echo "corral top exited $?"; sleep 60'
    )
    t.tmux("new-session", "-d", "-s", "top", "-x", "100", "-y", "30", shell)
    socket_path = t.tmux("display-message", "-p", "#{socket_path}").strip()
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True, timeout=10)
        Path(socket_path).unlink(missing_ok=True)  # kill-server leaves the socket file


def stamp(rec: Recording, index: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.info(index).wall_time))


def test_replay_in_tmux_as_a_person_uses_it(term: Terminal) -> None:
    with Recording(RECORDING) as rec:
        first, last = stamp(rec, 0), stamp(rec, 120)
        forky = rec.frame(120).sample.cgroups["demo.slice/forky.service"]
    screen = term.shows("replay: demo.corral", "NAME", "web.service", "batch.service")
    assert re.search(r"frame \d+/121 2026-11-29 00:2\d:\d\d", screen), screen
    assert len(screen.splitlines()[0]) <= 100  # fits the 100 columns

    # Pause, then travel in time: Home, steps, jumps, End; both ends stop.
    term.keys("Space")
    term.shows("PAUSED")
    term.keys("Home")
    # The header and the table are drawn in turns: a screen counts once both show a frame.
    # The first frame has no sample before it: no rates, its CPU shown as unknown.
    term.frame(f"frame 1/121 {first}", r"web\.service +service +- ")
    term.keys("Right", "Right", "Right", "Left")
    term.shows("frame 3/121")
    term.keys("]")
    term.shows("frame 13/121")
    term.keys("[", "Left")
    # web.service's CPU against its quota: 0.2 cores at first, 0.5 after the raise.
    term.frame("frame 2/121", WEB_CPU.format(r"0\.(19|20|21)"))
    term.keys("End")
    late = term.frame(f"frame 121/121 {last}", WEB_CPU.format(r"0\.(49|50|51)"))
    term.keys("Right")
    time.sleep(0.5)
    assert "frame 121/121" in term.screen()  # the last frame stays the last

    assert "/48Mi" in term.line(late, "batch.service")  # usage against memory.high

    # j/k to batch.service (the table is sorted by CPU, so find its row), Enter for detail.
    rows = [ln for ln in late.splitlines() if re.search(r"\b(cgroup|slice|service)\b", ln)]
    index = next(i for i, ln in enumerate(rows) if "batch.service" in ln)
    assert index >= 2  # under / and demo.slice in the tree
    term.keys(*["j"] * index, "k", "j")  # from the first row, down to it, up one, back
    term.keys("Enter")
    detail = term.shows("/demo.slice/batch.service", "Plots")
    assert "high 48Mi" in detail and "max 96Mi" in detail, detail
    assert "NAME" not in detail  # the table is behind the detail screen
    term.keys("Escape")
    term.shows("NAME", "web.service")

    # / filters by substring; Enter keeps the filter; its ancestors stay for the tree.
    term.keys("/")
    term.type("forky")
    term.keys("Enter")
    filtered = term.shows("filter 'forky'")
    assert "forky.service" in filtered and "web.service" not in filtered
    assert "batch.service" not in filtered
    term.keys("j", "j", "Enter")
    detail = term.shows("/demo.slice/forky.service")
    assert f"pids {forky.pids_current}/8 " in detail, detail  # against pids.max
    assert forky.pids_events is not None and forky.pids_events.max > 0  # forks were refused
    term.keys("Escape")
    term.shows("filter 'forky'")

    term.keys("q")
    term.shows("corral top exited 0")
