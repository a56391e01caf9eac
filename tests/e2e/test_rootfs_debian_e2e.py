"""`corral rootfs debian`, for real: debootstrap bookworm minbase from this machine's mirror
(about 30 s here), then dpkg inside the tree; and a run interrupted midway (ctrl-C to the
process group, or SIGTERM to corral alone) that leaves no directory, mount or process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.rootfs import mounts_under

CORRAL = [sys.executable, "-m", "corral", "rootfs", "debian"]


def test_minbase_with_included_packages(tmp_path: Path) -> None:
    root = tmp_path / "debian"
    started = time.monotonic()
    run = subprocess.run(
        [*CORRAL, str(root), "--include", "less,netbase"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    print(f"corral rootfs debian took {took:.0f} s")
    assert run.stdout.splitlines()[-1].startswith(f"corral rootfs: made {root}: Debian bookworm, ")
    phases = [line.split()[0] for line in run.stderr.splitlines()]
    assert phases == [
        "prepare",
        "download",
        "extract",
        "unpack",
        "configure",
        "unpack",
        "configure",
    ]
    assert os.listdir(tmp_path) == ["debian"] and mounts_under(tmp_path) == []

    query = ["chroot", str(root), "/usr/bin/dpkg-query", "-W", "-f", "${Package} ${Status}\n"]
    listed = subprocess.run(query, capture_output=True, text=True, check=True).stdout
    status = dict(line.split(" ", 1) for line in listed.splitlines())
    for package in ("base-files", "dpkg", "apt", "libc6", "less", "netbase"):
        assert status.get(package) == "install ok installed", package
    less = subprocess.run(
        ["chroot", str(root), "less", "--version"], capture_output=True, text=True
    )
    assert less.returncode == 0 and less.stdout.startswith("less ")
    # the runtime binds over these: present, and not the build host's copies
    assert (root / "etc/resolv.conf").read_bytes() == b""
    assert (root / "etc/hostname").read_bytes() == b""
    assert "localhost" in (root / "etc/hosts").read_text()  # netbase's


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_run_leaves_nothing(tmp_path: Path, how: str) -> None:
    proc = subprocess.Popen(
        [*CORRAL, str(tmp_path / "debian")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a job
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "prepare" ends once packages are downloading
    assert first.startswith("  prepare "), first
    time.sleep(2)
    staging = [n for n in os.listdir(tmp_path) if n.startswith(".debian.corral-")]
    assert len(staging) == 1  # debootstrap is at work in the sibling
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the foreground job
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    message = "interrupted" if how == "ctrl-c" else "terminated (SIGTERM)"
    assert f"corral rootfs: {message}; nothing was made" in err
    assert proc.returncode == (130 if how == "ctrl-c" else 1)
    assert os.listdir(tmp_path) == [] and mounts_under(tmp_path) == []
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == ""
