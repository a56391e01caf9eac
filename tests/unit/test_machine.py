"""corral machine: the command line it builds and the errors it gives, without booting."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.machine import MachineError, MachineSpec, Requirements, build_command, run
from runtime.machine.requirements import find_kernel
from runtime.machine.vm import guest_script

READY = Requirements(
    qemu="/usr/bin/qemu-system-x86_64",
    kernel="/boot/vmlinuz-6.1.0-56-amd64",
    vng="/venv/bin/vng",
    kvm_usable=False,
    kvm_detail="test",
)


def test_command_disables_kvm_and_passes_every_option() -> None:
    spec = MachineSpec(
        memory="2G", cpus=1, out="/tmp/o", forwards=((9464, 9464), (8000, 80)), cwd="/src"
    )
    cmd = build_command(spec, "/tmp/x/run.sh", READY, disk_path="/tmp/d.img")
    assert cmd[:3] == ["/venv/bin/vng", "--run", "/boot/vmlinuz-6.1.0-56-amd64"]
    assert "--disable-kvm" in cmd
    assert cmd[cmd.index("--memory") + 1] == "2G"
    assert cmd[cmd.index("--cpus") + 1] == "1"
    assert cmd[cmd.index("--rwdir") + 1] == "/tmp/o"
    assert cmd[cmd.index("--disk") + 1] == "/tmp/d.img"
    qemu = next(word for word in cmd if word.startswith("--qemu-opts=-netdev user,"))
    assert "hostfwd=tcp:127.0.0.1:9464-:9464,hostfwd=tcp:127.0.0.1:8000-:80" in qemu
    # Only the script's path rides on the kernel command line (2048 bytes on x86).
    assert cmd[cmd.index("--exec") + 1] == "sh /tmp/x/run.sh"
    script = guest_script(spec, ["pytest", "-k", "a b"])
    assert "cd /src &&" in script
    # The user's words survive the shell intact, after the guest helper and "--".
    words = shlex.split(script.split("exec ", 1)[1])
    assert words[-4:] == ["--", "pytest", "-k", "a b"]
    assert "--net" in words and "--out" in words


def test_kvm_is_used_only_when_shown_to_work() -> None:
    usable = Requirements(READY.qemu, READY.kernel, READY.vng, True, "ok")
    assert "--disable-kvm" not in build_command(MachineSpec(), "/tmp/run.sh", usable)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (MachineSpec(memory="12"), "--memory 12: give at least 256M"),
        (MachineSpec(cpus=0), "--cpus 0: give 1..64"),
        (MachineSpec(disk="0"), "--disk 0: give a size of at least 1M"),
        (MachineSpec(forwards=((0, 80),)), "--forward 0:80: ports must be 1..65535"),
        (MachineSpec(env={"1X": "y"}), "--env 1X: not a valid variable name"),
    ],
)
def test_bad_spec_is_refused_before_booting(spec: MachineSpec, message: str) -> None:
    with pytest.raises(MachineError, match=message):
        run(spec, ["true"], READY)


def test_missing_requirements_name_the_package_and_the_fix() -> None:
    bare = Requirements(None, None, None, False, "no /dev/kvm")
    with pytest.raises(MachineError) as err:
        run(MachineSpec(), ["true"], bare)
    text = str(err.value)
    for needed in ("qemu-system-x86", "linux-image-amd64", "virtme-ng", "corral machine setup"):
        assert needed in text


def test_no_command_is_an_error() -> None:
    with pytest.raises(MachineError, match="no command given"):
        guest_script(MachineSpec(), [])


def test_find_kernel_prefers_newest_generic_kernel(tmp_path: Path) -> None:
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-56-amd64", "vmlinuz-6.12.0-1-cloud-amd64"):
        (tmp_path / name).write_text("")
    assert find_kernel(str(tmp_path)) == str(tmp_path / "vmlinuz-6.1.0-56-amd64")
    assert find_kernel(str(tmp_path / "empty")) is None


def test_cli_bad_forward_and_status_json() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "corral", "machine", "run", "--forward", "x:1", "--", "true"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "expected HOSTPORT:GUESTPORT" in bad.stderr
    status = subprocess.run(
        [sys.executable, "-m", "corral", "machine", "status", "--json"],
        capture_output=True,
        text=True,
    )
    data = json.loads(status.stdout)
    assert status.returncode == (0 if data["ready"] else 1)
    assert set(data) >= {"ready", "qemu", "kernel", "vng", "kvm_usable", "missing"}
