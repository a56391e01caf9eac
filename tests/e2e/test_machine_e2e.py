"""corral machine, booted for real: exit status, output, scratch disk, writable dir, and a
host loopback port forwarded to a server in the guest."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

GUEST_SERVER = textwrap.dedent(
    """
    import http.server, os, sys, time
    done = []
    class Reply(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("argv=%d disk=%s cgroup2=%s" % (
                len(sys.argv[1]),
                os.environ.get("CORRAL_MACHINE_DISK"),
                open("/sys/fs/cgroup/cgroup.subtree_control").read().strip(),
            )).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
            done.append(self.path == "/done")
    server = http.server.HTTPServer(("0.0.0.0", 8000), Reply)
    server.timeout = 5
    deadline = time.monotonic() + 240
    while not any(done) and time.monotonic() < deadline:
        server.handle_request()
    open(os.environ["CORRAL_MACHINE_OUT"] + "/served", "w").write("yes")
    sys.exit(42 if any(done) else 1)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch_until_served(url: str, proc: subprocess.Popen[bytes], deadline: float) -> str:
    # qemu accepts on the host port before the guest listens: a request that times out
    # may still be served later, to nobody. So poll until one is answered.
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return str(resp.read().decode())
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} never answered (machine exit status {proc.poll()})")


def test_machine_runs_forwards_and_returns_status(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "corral", "machine", "run", "--disk", "16M"]
    cmd += ["--forward", f"{port}:8000", "--out", str(tmp_path), "--timeout", "400"]
    # Far longer than the kernel command line's 2048 bytes, which once hung the guest.
    cmd += ["--", sys.executable, "-c", GUEST_SERVER, "x" * 5000]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        body = fetch_until_served(f"http://127.0.0.1:{port}/", proc, time.monotonic() + 300)
        # Tell the guest to stop; its reply may be cut short by the power-off.
        with contextlib.suppress(OSError, AssertionError):
            fetch_until_served(f"http://127.0.0.1:{port}/done", proc, time.monotonic() + 60)
        status = proc.wait(timeout=120)
    finally:
        proc.kill()
    reader.join(5)
    assert "argv=5000 disk=/dev/vda" in body
    assert "memory" in body and "io" in body and "pids" in body
    assert status == 42, b"".join(output).decode(errors="replace")[-2000:]
    assert (tmp_path / "served").read_text() == "yes"


def test_command_not_found_is_127() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral", "machine", "run", "--", "no-such-command-x"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 127
    assert "no-such-command-x: command not found" in done.stdout + done.stderr


def test_timeout_stops_qemu_too(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "corral", "machine", "run", "--timeout", "3"]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path), "--", "sleep", "600"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 125
    assert "did not finish within 3 s" in done.stderr
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left running: {left.stdout}"
