"""The one seam between corral and the raw Linux syscalls that Python 3.11 lacks.

libc is loaded with ``use_errno=True`` so that every failure becomes an ``OSError`` carrying
the real errno and the path or argument that failed. Nothing else in corral calls ctypes.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

_libc = ctypes.CDLL(None, use_errno=True)

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The eight namespaces, by the name /proc/PID/ns/ uses for each.
NAMESPACE_FLAGS: dict[str, int] = {
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "mnt": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}

# <linux/magic.h>
CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x27E0EB
TMPFS_MAGIC = 0x01021994

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

# <asm/unistd_64.h> (x86_64); glibc has no pivot_root wrapper.
SYS_pivot_root = 155

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38


def _check(result: int, what: str, path: str | None = None) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _fs(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def unshare(flags: int) -> None:
    """unshare(2). EINVAL for CLONE_NEWUSER in a multithreaded process."""
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2) on an fd opened from /proc/PID/ns/NAME."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns(fd={fd})")


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2); the error names the target."""
    result = _libc.mount(_fs(source), _fs(target), _fs(fstype), ctypes.c_ulong(flags), _fs(data))
    _check(result, f"mount {source or 'none'} on {target} ({fstype or 'bind'})", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_fs(target), ctypes.c_int(flags)), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) through syscall(): glibc has no wrapper."""
    result = _libc.syscall(ctypes.c_long(SYS_pivot_root), _fs(new_root), _fs(put_old))
    _check(result, "pivot_root", new_root)


def sethostname(name: str) -> None:
    """sethostname(2) in the caller's uts namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    args = (ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5))
    return _check(_libc.prctl(ctypes.c_int(option), *args), f"prctl({option})")


class _Statfs(ctypes.Structure):
    # struct statfs on 64-bit Linux: f_type is the first word.
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


def statfs_type(path: str | os.PathLike[str]) -> int:
    """The filesystem magic number of ``path`` (statfs(2) f_type)."""
    buf = _Statfs()
    _check(_libc.statfs(_fs(path), ctypes.byref(buf)), "statfs", os.fspath(path))
    return int(buf.f_type) & 0xFFFFFFFF


def errno_name(code: int) -> str:
    """ENOENT for 2: for messages that name what happened."""
    return _errno.errorcode.get(code, str(code))
