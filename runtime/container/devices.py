"""The container's /dev: device nodes, /dev/ptmx and the /proc/self/fd links (as runc does).

runc's createDevices, bindMountDeviceNode, setupPtmx and setupDevSymlinks
(libcontainer/rootfs_linux.go), run on the /dev tmpfs before pivot_root. The nodes are the
six every OCI runtime creates (the runtime-spec's "default devices"), with their real
major:minor from Documentation/admin-guide/devices.txt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from runtime import syscalls
from runtime.container.volumes import resolve_in_root


@dataclass(frozen=True)
class DeviceNode:
    """A character device node: /dev/NAME with MAJOR:MINOR, owned by root."""

    path: str
    major: int
    minor: int
    mode: int = 0o666


DEFAULT_DEVICES = (
    DeviceNode("/dev/null", 1, 3),
    DeviceNode("/dev/zero", 1, 5),
    DeviceNode("/dev/full", 1, 7),
    DeviceNode("/dev/random", 1, 8),
    DeviceNode("/dev/urandom", 1, 9),
    DeviceNode("/dev/tty", 5, 0),
)

# (target, link) pairs; /dev/core is added only when the kernel has /proc/kcore
# (CONFIG_PROC_KCORE), as runc checks.
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)
KCORE_LINK = ("/proc/kcore", "/dev/core")


def dev_symlinks(host_proc: str = "/proc") -> tuple[tuple[str, str], ...]:
    """The links runc makes in /dev: the fd ones, and /dev/core if ``host_proc`` has kcore."""
    if os.path.exists(os.path.join(host_proc, "kcore")):
        return (*DEV_SYMLINKS, KCORE_LINK)
    return DEV_SYMLINKS


def populate_dev(
    rootfs: str, *, userns: bool, devices: tuple[DeviceNode, ...] = DEFAULT_DEVICES
) -> None:
    """Fill the freshly mounted ``rootfs``/dev tmpfs: nodes, the ptmx link, the fd links.

    Outside a user namespace the nodes are made with mknod(2). Inside one mknod needs
    CAP_MKNOD in the initial user namespace (EPERM), and a node there would not work anyway
    (a tmpfs mounted in a user namespace is SB_I_NODEV), so the host's node is bind-mounted
    onto an empty file instead, exactly as runc does; so is a node whose mknod gets EPERM.
    """
    for node in devices:
        create_device(rootfs, node, bind=userns)
    setup_ptmx(rootfs)
    for target, link in dev_symlinks():
        path = resolve_in_root(rootfs, link, follow=False)
        with contextlib.suppress(FileExistsError):
            os.symlink(target, path)


def create_device(rootfs: str, node: DeviceNode, *, bind: bool) -> None:
    """mknod(2) ``node`` in ``rootfs``, or bind the host's node over an empty file."""
    dest = resolve_in_root(rootfs, node.path, follow=False)
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    if not bind:
        try:
            os.mknod(dest, stat.S_IFCHR | node.mode, os.makedev(node.major, node.minor))
        except FileExistsError:
            return
        except PermissionError:
            bind = True
        else:
            # mknod's mode passed through the umask: set the permission bits exactly.
            os.chmod(dest, node.mode)
            os.chown(dest, 0, 0)
            return
    _bind_device(node, dest)


def _bind_device(node: DeviceNode, dest: str) -> None:
    host = os.stat(node.path)
    if not stat.S_ISCHR(host.st_mode) or host.st_rdev != os.makedev(node.major, node.minor):
        raise OSError(
            errno.ENODEV,
            f"host {node.path} is not the character device {node.major}:{node.minor}, "
            "so it cannot be bind-mounted into the container",
            node.path,
        )
    fd = os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    os.close(fd)
    syscalls.mount(node.path, dest, None, syscalls.MS_BIND)


def setup_ptmx(rootfs: str) -> None:
    """/dev/ptmx -> pts/ptmx: the multiplexer of the container's own devpts instance.

    devpts is mounted with newinstance,ptmxmode=0666, so opening /dev/ptmx allocates a
    terminal in the container's instance, never the host's.
    """
    ptmx = resolve_in_root(rootfs, "/dev/ptmx", follow=False)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ptmx)
    os.symlink("pts/ptmx", ptmx)
