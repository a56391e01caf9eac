"""`corral record` on the host's real cgroup2: frames on a fixed grid, the collector's
selection options, a clean stop on SIGINT/SIGTERM, a countdown only on a terminal."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_recording_support import host_tree

from corral.cli import main
from monitor.recording import Recording, replay

CORRAL = [sys.executable, "-m", "corral"]


def _record(*args: str, stderr: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CORRAL, "record", *args], stdout=subprocess.PIPE, stderr=stderr)


def test_duration_records_one_frame_per_tick(tmp_path: Path, host_cgroup2: Path) -> None:
    out = tmp_path / "d.rec"
    with host_tree(host_cgroup2, "cli") as tree:
        tree.add("a", busy=True)
        tree.add("b")
        proc = _record(str(out), "--interval", "500ms", "--duration", "2", "--subtree", tree.base)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with Recording(out) as rec:
        # Ticks at 0, .5, 1, 1.5 and 2 s; a poll that overran on a loaded host skips the
        # ticks it missed (monitor.recording.recorder), so fewer frames are possible, but the
        # last one is always at or after the duration.
        frames = len(rec)
        assert 2 <= frames <= 5 and rec.truncation is None
        assert rec.header["subtree"] == tree.base and rec.header["interval_seconds"] == 0.5
        start, end = rec.times or (0.0, 0.0)
        assert end - start >= 1.9
        last = rec.frame(-1)
    assert set(last.sample.cgroups) == {tree.base, f"{tree.base}/a", f"{tree.base}/b"}
    assert last.names[f"{tree.base}/a"].path == f"{tree.base}/a"
    snaps = list(replay(out))
    busy = snaps[-1].models[f"{tree.base}/a"].cpu_cores
    assert busy is not None and busy > 0  # a busy loop, however loaded the host
    text = err.decode()
    assert f"{frames} frames" in text and "bytes per cgroup per sample" in text
    assert "\r" not in text and "s left" not in text  # stderr is not a terminal


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_signal_stops_cleanly(tmp_path: Path, host_cgroup2: Path, signum: int) -> None:
    out = tmp_path / "s.rec"
    with host_tree(host_cgroup2, "sig") as tree:
        tree.add("a")
        proc = _record(str(out), "--interval", "50ms", "--subtree", tree.base)
        deadline = time.monotonic() + 30
        while not _frames(out) >= 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"stopped by {signal.Signals(signum).name}" in err.decode()
    with Recording(out) as rec:
        assert len(rec) >= 3 and rec.truncation is None
        assert [f.index for f in rec] == list(range(len(rec)))


def _frames(path: Path) -> int:
    try:
        with Recording(path) as rec:
            return len(rec)
    except Exception:
        return 0


def test_countdown_only_on_a_terminal(tmp_path: Path, host_cgroup2: Path) -> None:
    primary, secondary = pty.openpty()
    with host_tree(host_cgroup2, "tty") as tree:
        args = ("--interval", "500ms", "--duration", "1", "--subtree", tree.base)
        proc = _record(str(tmp_path / "t.rec"), *args, stderr=secondary)
        os.close(secondary)
        proc.wait(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    text = seen.decode()
    assert proc.returncode == 0, text
    assert "\rcorral record: 1 frames, 1 cgroups" in text and "s left" in text, text
    assert "3 frames in" in text


def test_selection_options(tmp_path: Path, host_cgroup2: Path) -> None:
    runner = CliRunner()
    with host_tree(host_cgroup2, "sel") as tree:
        for name in ("web", "db", "web2"):
            tree.add(name)
        tree.fs.create(f"{tree.base}/web/inner")

        def recorded(*args: str) -> set[str]:
            out = tmp_path / f"sel{len(list(tmp_path.iterdir()))}.rec"
            base = ["record", str(out), "--duration", "0", "--subtree", tree.base]
            result = runner.invoke(main, [*base, *args])
            assert result.exit_code == 0, result.output
            with Recording(out) as rec:
                return {p.removeprefix(tree.base) for p in rec.frame(0).sample.cgroups}

        try:
            assert recorded() == {"", "/web", "/db", "/web2", "/web/inner"}
            assert recorded("--max-depth", "1") == {"", "/web", "/db", "/web2"}
            assert recorded("--include", f"{tree.base}/web*") == {"/web", "/web2"}
            assert recorded("--exclude", f"{tree.base}/web/**") == {"", "/db", "/web2"}
        finally:
            tree.fs.remove(f"{tree.base}/web/inner")


def test_existing_file_and_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "x.rec"
    out.write_bytes(b"precious")
    result = runner.invoke(main, ["record", str(out), "--duration", "0"])
    assert result.exit_code == 1 and "already exists" in result.output
    assert out.read_bytes() == b"precious"
    for args, message in (
        (["--interval", "0"], "'0': expected a duration above 0, like 1s"),
        (["--interval", "soon"], "'soon': expected a duration above 0, like 1s"),
        (["--duration", "-1"], "'-1': expected a duration from 0 s, like 1s"),
        (["--max-depth", "-1"], "-1 is not in the range x>=0"),
    ):
        result = runner.invoke(main, ["record", str(tmp_path / "y.rec"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    result = runner.invoke(main, ["record", str(tmp_path / "y.rec"), "--subtree", "../up"])
    assert result.exit_code == 1 and "'..' is not allowed" in result.output
    assert not (tmp_path / "y.rec").exists()
    result = runner.invoke(main, ["record", str(out), "--duration", "0", "--force"])
    assert result.exit_code == 0, result.output
    with Recording(out) as rec:
        assert len(rec) == 1
