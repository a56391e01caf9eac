"""Boot the machine and run one command in it; the command's exit status is returned.

The guest runs ``python -m runtime.machine.guest`` first (controllers, disk, network), which
then execs the command. Output streams through as the guest prints it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from runtime.cgroupfs.limit_syntax import parse_size
from runtime.machine.requirements import Requirements, find_requirements

GUEST_IP = "10.0.2.15/24"  # qemu user networking's default guest address


class MachineError(Exception):
    """The machine cannot be started; the message says what is missing and the fix."""


@dataclass(frozen=True)
class MachineSpec:
    memory: str = "1G"
    cpus: int = 2
    disk: str | None = None  # size of a scratch block device, e.g. "256M"
    forwards: tuple[tuple[int, int], ...] = ()  # (host port on 127.0.0.1, guest port)
    out: str | None = None  # host directory the guest can write
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = field(default_factory=os.getcwd)
    timeout: float | None = None

    def validate(self) -> None:
        size = parse_size(self.memory, "--memory")
        if not isinstance(size, int) or size < 256 << 20:
            raise MachineError(f"--memory {self.memory}: give at least 256M")
        if not 1 <= self.cpus <= 64:
            raise MachineError(f"--cpus {self.cpus}: give 1..64")
        if self.disk is not None:
            disk = parse_size(self.disk, "--disk")
            if not isinstance(disk, int) or disk < 1 << 20:
                raise MachineError(f"--disk {self.disk}: give a size of at least 1M")
        for host, guest in self.forwards:
            if not (1 <= host <= 65535 and 1 <= guest <= 65535):
                raise MachineError(f"--forward {host}:{guest}: ports must be 1..65535")
        for key in self.env:
            if not key.replace("_", "a").isalnum() or key[0].isdigit():
                raise MachineError(f"--env {key}: not a valid variable name")


def build_command(
    spec: MachineSpec, script: str, req: Requirements, disk_path: str | None = None
) -> list[str]:
    """The vng command line that boots the machine and runs the host file ``script``
    (written from guest_script()) in it. No side effects."""
    assert req.kernel and req.vng
    cmd = [req.vng, "--run", req.kernel, "--force-9p", "--memory", spec.memory]
    cmd += ["--cpus", str(spec.cpus)]
    if not req.kvm_usable:
        cmd.append("--disable-kvm")
    if spec.out:
        cmd += ["--rwdir", spec.out]
    if disk_path:
        cmd += ["--disk", disk_path]
    if spec.forwards:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in spec.forwards)
        # Attached with "=": a separate word starting with "-" reads as an option to vng.
        cmd.append(f"--qemu-opts=-netdev user,id=fwd,{fwd} -device virtio-net-pci,netdev=fwd")
    # The command travels on the kernel command line, which holds 2048 bytes on x86: a
    # longer one is cut and the guest hangs. So only the script's path goes that way.
    cmd += ["--exec", f"sh {shlex.quote(script)}"]
    return cmd


def guest_script(spec: MachineSpec, argv: Sequence[str]) -> str:
    """The shell script the guest runs: the guest helper, then ``argv``."""
    if not argv:
        raise MachineError("no command given: corral machine run [OPTIONS] -- CMD [ARG...]")
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CORRAL_IN_MACHINE": "1",
        **spec.env,
    }
    guest = [sys.executable, "-m", "runtime.machine.guest"]
    if spec.forwards:
        guest += ["--net", GUEST_IP]
    if spec.out:
        guest += ["--out", spec.out]
    words = ["env", *(f"{k}={v}" for k, v in env.items()), *guest, "--", *argv]
    # The serial console can swallow the first bytes the guest prints: start on a newline.
    return f"echo\ncd {shlex.quote(spec.cwd)} && exec {shlex.join(words)}\n"


def run(spec: MachineSpec, argv: Sequence[str], req: Requirements | None = None) -> int:
    """Boot, run ``argv`` with output streamed, power off; the guest command's status."""
    spec.validate()
    req = req or find_requirements()
    if not req.ready:
        raise MachineError(
            "cannot start the machine: "
            + "; ".join(req.missing)
            + ". Run `corral machine setup` to install them."
        )
    if spec.out:
        os.makedirs(spec.out, exist_ok=True)
    script = guest_script(spec, argv)
    # The guest sees the host's filesystem, so files in this directory reach it as they are.
    with tempfile.TemporaryDirectory(prefix="corral-machine-") as scratch:
        script_path = os.path.join(scratch, "run.sh")
        with open(script_path, "w") as f:
            f.write(script)
        disk_path = None
        if spec.disk:
            disk_path = os.path.join(scratch, "disk.img")
            with open(disk_path, "wb") as f:
                size = parse_size(spec.disk)
                assert isinstance(size, int)  # validate() refused anything else
                f.truncate(size)
        cmd = build_command(spec, script_path, req, disk_path)
        env = dict(os.environ)
        # vng calls its helper virtme-run through PATH.
        env["PATH"] = os.path.dirname(req.vng or "") + os.pathsep + env.get("PATH", "")
        # vng reopens its stdout, which truncates a file the caller redirected us to: give
        # it a pipe and copy what the guest prints through to our own stdout.
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=scratch,
            start_new_session=True,  # vng, virtme-run and qemu: one group to stop together
        )
        return _wait(proc, spec.timeout)


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> int:
    """Stream the output until the machine powers off; on timeout, SIGTERM or Ctrl-C, stop
    the whole process group so that no qemu is left running."""
    pump = threading.Thread(target=_copy_output, args=(proc,), daemon=True)
    pump.start()
    previous = _on_sigterm_exit()
    try:
        status = proc.wait(timeout=timeout)
        pump.join()
        return status
    except subprocess.TimeoutExpired:
        raise MachineError(f"the machine did not finish within {timeout:g} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm_exit() -> signal.Handlers | None:
    """Turn SIGTERM into SystemExit so the cleanup above runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    return previous  # type: ignore[return-value]


# qemu's own warning about the raw scratch disk says nothing the user can act on.
_NOISE = (b"WARNING: Image format was not specified", b"Automatically detecting the format")
_NOISE_NEXT = b"Specify the 'raw' format explicitly"


def _copy_output(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    out = sys.stdout.buffer
    for line in proc.stdout:
        if any(n in line for n in _NOISE) or _NOISE_NEXT in line:
            continue
        out.write(line)
        out.flush()
