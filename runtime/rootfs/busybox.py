"""`corral rootfs busybox DIR`: a tiny root filesystem around Debian's busybox-static.

DIR/bin/busybox is a copy of the host's static binary; every applet the binary lists with
``busybox --list-full`` (paths like ``usr/bin/env``) is a relative symlink to it, so the links
resolve inside the container and when the tree is inspected from the host alike. The
directories, /etc/passwd and /etc/group follow the busybox image (root and nobody, 65534).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runtime.rootfs import (
    RootfsError,
    resolve_target,
    staged,
    tree_size,
    write_placeholders,
)

BUSYBOX = "/bin/busybox"
INSTALL_HINT = "install Debian's busybox-static (`corral machine setup` does)"

# What a container runtime mounts over or expects (runc's rootfs_linux.go), with the modes
# a Debian system gives them: /tmp sticky and world-writable, /root private.
DIRECTORIES = {
    "bin": 0o755,
    "sbin": 0o755,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "etc": 0o755,
    "home": 0o755,
    "root": 0o700,
    "tmp": 0o1777,
    "var": 0o755,
    "run": 0o755,
}
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
# tty (5) is the group the runtime's /dev/pts is mounted with (gid=5), as in runc's spec.
GROUP = "root:x:0:\ntty:x:5:\nnobody:x:65534:\n"

PT_INTERP = 3  # <elf.h>: the program header naming the dynamic loader


@dataclass(frozen=True)
class BusyboxRootfs:
    path: Path
    applets: int  # symlinks made, one per applet
    size_bytes: int  # regular files (the binary and /etc)


def build_busybox(target: str, force: bool = False, busybox: str = BUSYBOX) -> BusyboxRootfs:
    """Make a busybox root filesystem at ``target`` (see the module docstring)."""
    path = resolve_target(target, force)
    check_static(busybox)
    applets = list_applets(busybox)
    with staged(path) as tmp:
        populate(tmp, busybox, applets)
    return BusyboxRootfs(path, len(applets), tree_size(path))


def populate(root: Path, busybox: str, applets: list[str]) -> None:
    """Directories, the binary, one symlink per applet, /etc."""
    for rel, mode in DIRECTORIES.items():
        (root / rel).mkdir(mode=mode)
        (root / rel).chmod(mode)  # mkdir's mode is masked by the umask
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    for rel in applets:
        link = root / rel
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath("bin/busybox", os.path.dirname(rel)))
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        (root / "etc" / name).write_text(text)
        (root / "etc" / name).chmod(0o644)
    write_placeholders(root)


def list_applets(busybox: str) -> list[str]:
    """Ask the binary: ``busybox --list-full`` prints one applet path per line."""
    try:
        out = subprocess.run(
            [busybox, "--list-full"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except subprocess.CalledProcessError as e:
        raise RootfsError(f"{busybox} --list-full failed: {e.stderr.strip()}") from e
    except OSError as e:
        raise RootfsError(f"cannot run {busybox}: {e.strerror}") from e
    return parse_applets(out)


def parse_applets(text: str) -> list[str]:
    """Applet paths relative to /, checked to stay inside the tree. Entries at the top level
    (Debian's build lists ``linuxrc``, an initrd's init) are left out, as is the binary's
    own path."""
    out: list[str] = []
    for line in text.splitlines():
        rel = line.strip()
        if not rel:
            continue
        if rel.startswith("/") or os.path.normpath(rel) != rel or rel.startswith(".."):
            raise RootfsError(f"busybox --list-full printed {rel!r}: not a relative path")
        if "/" in rel and rel != "bin/busybox" and rel not in out:
            out.append(rel)
    if not out:
        raise RootfsError("busybox --list-full printed no applets")
    return out


def check_static(busybox: str) -> None:
    """Refuse a binary that needs a dynamic loader (an ELF PT_INTERP program header), such
    as Debian's `busybox` package: the root filesystem has no libc for it."""
    try:
        with open(busybox, "rb") as f:
            interp = _has_interp(f)
    except FileNotFoundError:
        raise RootfsError(f"{busybox}: no such file; {INSTALL_HINT}") from None
    except OSError as e:
        raise RootfsError(f"{busybox}: {e.strerror}") from e
    if interp is None:
        raise RootfsError(f"{busybox} is not an ELF executable")
    if interp:
        raise RootfsError(f"{busybox} is dynamically linked; {INSTALL_HINT}")


def _has_interp(f: BinaryIO) -> bool | None:
    """Whether the ELF file has a PT_INTERP header; None when it is not ELF (<elf.h>)."""
    head = f.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    end = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # ELFCLASS64: e_phoff at 32, e_phentsize and e_phnum at 54
        (phoff,) = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
    else:  # ELFCLASS32: e_phoff at 28, e_phentsize and e_phnum at 42
        (phoff,) = struct.unpack_from(end + "I", head, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    if phentsize < 4 or len(table) < phentsize * phnum:
        return None
    types = [struct.unpack_from(end + "I", table, i * phentsize)[0] for i in range(phnum)]
    return PT_INTERP in types
