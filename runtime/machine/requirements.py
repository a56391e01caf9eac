"""What `corral machine` needs on the host, found (or not) without changing anything."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

APT_PACKAGES = ("qemu-system-x86", "linux-image-amd64", "busybox-static")
PIP_PACKAGE = "virtme-ng"
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Requirements:
    qemu: str | None  # path of qemu-system-x86_64
    kernel: str | None  # path of a vmlinuz with 9p and virtio built in or as modules
    vng: str | None  # path of virtme-ng's `vng`
    kvm_usable: bool
    kvm_detail: str

    @property
    def missing(self) -> list[str]:
        """Human descriptions of what is missing, each with the fix."""
        out = []
        if self.qemu is None:
            out.append(f"{QEMU} not found (Debian package qemu-system-x86)")
        if self.kernel is None:
            out.append("no kernel image /boot/vmlinuz-*-amd64 (Debian package linux-image-amd64)")
        if self.vng is None:
            out.append("virtme-ng's `vng` not found (pip package virtme-ng)")
        return out

    @property
    def ready(self) -> bool:
        return not self.missing


def find_kernel(boot: str = "/boot") -> str | None:
    """The newest Debian generic kernel. The "cloud" flavour lacks 9p, so it is skipped."""
    images = [
        p for p in glob.glob(os.path.join(boot, "vmlinuz-*")) if "cloud" not in os.path.basename(p)
    ]
    return max(images, key=_version_key) if images else None


def find_vng() -> str | None:
    """`vng` on PATH or beside the running interpreter (an unactivated venv)."""
    beside = os.path.join(os.path.dirname(sys.executable), "vng")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("vng")


def probe_kvm(qemu: str | None, wait: float = 1.5) -> tuple[bool, str]:
    """Whether qemu really runs under KVM here: /dev/kvm can exist and answer its ioctls
    while qemu still aborts setting up a vCPU (seen on Firecracker guests), so start a
    paused qemu with -accel kvm and see whether it survives ``wait`` seconds."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if qemu is None:
        return False, f"/dev/kvm exists; {QEMU} missing, so KVM was not tried"
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-display", "none", "-nodefaults", "-S"]
    argv += ["-monitor", "none", "-serial", "none", "-m", "64"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return True, "qemu started a KVM guest"
    err = (proc.stderr.read().decode(errors="replace") if proc.stderr else "").strip()
    first = err.splitlines()[0] if err else f"exit status {proc.returncode}"
    return False, f"/dev/kvm exists but qemu under KVM fails here ({first}); using TCG"


def find_requirements(check_kvm: bool = True) -> Requirements:
    qemu = shutil.which(QEMU)
    kvm_ok, detail = probe_kvm(qemu) if check_kvm else (False, "not checked")
    return Requirements(
        qemu=qemu, kernel=find_kernel(), vng=find_vng(), kvm_usable=kvm_ok, kvm_detail=detail
    )


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))
