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


# <sys/inotify.h>: the collector watches cgroup directories for writes to limit files and
# kernfs notifications (cgroup.events, memory.events, pids.events).
IN_MODIFY = 0x00000002
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


def inotify_init1(flags: int) -> int:
    """inotify_init1(2): a new inotify instance's fd (EMFILE past fs.inotify.max_user_instances)."""
    return _check(_libc.inotify_init1(ctypes.c_int(flags)), "inotify_init1")


def inotify_add_watch(fd: int, path: str | os.PathLike[str], mask: int) -> int:
    """inotify_add_watch(2): the watch descriptor (ENOSPC past fs.inotify.max_user_watches)."""
    wd = _libc.inotify_add_watch(ctypes.c_int(fd), _fs(path), ctypes.c_uint32(mask))
    return _check(wd, "inotify_add_watch", os.fspath(path))


def inotify_rm_watch(fd: int, wd: int) -> None:
    """inotify_rm_watch(2). EINVAL when the watch is already gone (its directory removed)."""
    _check(_libc.inotify_rm_watch(ctypes.c_int(fd), ctypes.c_int(wd)), f"inotify_rm_watch({wd})")


# <malloc.h> (glibc)
M_MMAP_THRESHOLD = -3


def set_mmap_threshold(size: int) -> None:
    """mallopt(M_MMAP_THRESHOLD, size): allocations of ``size`` bytes and more get their own
    mmap and go back to the kernel when freed. Setting it also turns off glibc's dynamic
    threshold, which after the first large free serves later large blocks from the heap,
    where a long-running process that builds multi-megabyte buffers keeps them as RSS."""
    if _libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(size)) != 1:
        raise OSError(_errno.EINVAL, f"mallopt(M_MMAP_THRESHOLD, {size}) refused")


# <asm/unistd_64.h>: rt_sigaction through syscall(), for the signals glibc keeps to itself.
SYS_rt_sigaction = 13
SIGRTMAX = 64


class _KernelSigaction(ctypes.Structure):
    """struct kernel_sigaction (x86_64): handler, flags, restorer, a 64-bit mask."""

    _fields_ = (
        ("handler", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("restorer", ctypes.c_void_p),
        ("mask", ctypes.c_ulong),
    )


def default_signal_disposition(sig: int) -> None:
    """rt_sigaction(sig, SIG_DFL) by the raw syscall. glibc refuses 32 and 33 (its own
    SIGCANCEL and SIGSETXID) in sigaction(), and Python's signal module with it, yet execve
    passes an inherited SIG_IGN of them on to the new program like any other."""
    action = _KernelSigaction(None, 0, None, 0)
    result = _libc.syscall(
        ctypes.c_long(SYS_rt_sigaction),
        ctypes.c_int(sig),
        ctypes.byref(action),
        None,
        ctypes.c_size_t(8),
    )
    _check(result, f"rt_sigaction({sig}, SIG_DFL)")


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


# <sys/mount.h>: the atime and propagation flags a container's mounts also use.
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_UNBINDABLE = 1 << 17
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24


# <linux/prctl.h>: the options runc's finalizeNamespace uses for capabilities and credentials.
PR_GET_PDEATHSIG = 2
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <asm/unistd_64.h> (x86_64): capget/capset and close_range through syscall().
SYS_capget = 125
SYS_capset = 126
SYS_close_range = 436

# <linux/capability.h>: version 3 carries two 32-bit words per set (capabilities 0..63).
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# <linux/close_range.h> (Linux 5.11)
CLOSE_RANGE_CLOEXEC = 1 << 2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """capget(2) through syscall(): (effective, permitted, inheritable) of ``pid`` (0: the
    calling thread) as 64-bit masks, bit N for capability N."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.syscall(ctypes.c_long(SYS_capget), ctypes.byref(header), data), f"capget({pid})")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) through syscall() on the calling thread only (capabilities are per thread).
    EPERM when a set grows past what the kernel allows (capabilities(7), "capset")."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    what = f"capset(eff={effective:#x}, prm={permitted:#x}, inh={inheritable:#x})"
    _check(_libc.syscall(ctypes.c_long(SYS_capset), ctypes.byref(header), data), what)


def prctl_get_int(option: int) -> int:
    """prctl(2) for the options that store an int through arg2 (PR_GET_PDEATHSIG)."""
    value = ctypes.c_int(0)
    _check(
        _libc.prctl(ctypes.c_int(option), ctypes.byref(value), *(ctypes.c_ulong(0),) * 3),
        f"prctl({option})",
    )
    return value.value


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2) through syscall(): ENOSYS before Linux 5.9, EINVAL for
    CLOSE_RANGE_CLOEXEC before 5.11."""
    result = _libc.syscall(
        ctypes.c_long(SYS_close_range),
        ctypes.c_uint(first),
        ctypes.c_uint(last),
        ctypes.c_uint(flags),
    )
    _check(result, f"close_range({first}, {last}, {flags:#x})")


# <linux/seccomp.h>; glibc has no seccomp() wrapper.
SYS_seccomp = 317
SECCOMP_SET_MODE_FILTER = 1


class _SockFprog(ctypes.Structure):
    # struct sock_fprog: unsigned short len (in instructions); struct sock_filter *filter.
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_mode_filter(program: bytes, flags: int = 0) -> None:
    """seccomp(2) SECCOMP_SET_MODE_FILTER: attach a classic BPF program (8-byte struct
    sock_filter each) to the calling thread. EACCES without no_new_privs or CAP_SYS_ADMIN;
    EINVAL when the kernel's checker rejects the program."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    result = _libc.syscall(
        ctypes.c_long(SYS_seccomp),
        ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(flags),
        ctypes.byref(prog),
    )
    _check(result, f"seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}, {len(program) // 8} insns)")


# <asm/unistd_64.h> (x86_64) and <linux/mount.h>: the new mount API (open_tree and
# move_mount since Linux 5.2, mount_setattr since 5.12); glibc 2.36 wrappers are not assumed.
SYS_open_tree = 428
SYS_move_mount = 429
SYS_mount_setattr = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
# <fcntl.h>
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000


class _MountAttr(ctypes.Structure):
    # struct mount_attr (MOUNT_ATTR_SIZE_VER0, 32 bytes).
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def open_tree(dfd: int, path: str, flags: int) -> int:
    """open_tree(2) through syscall(): with OPEN_TREE_CLONE, an fd of a detached copy of the
    mount at ``path`` (its submounts too with AT_RECURSIVE). ENOSYS before Linux 5.2."""
    result = _libc.syscall(
        ctypes.c_long(SYS_open_tree), ctypes.c_int(dfd), _fs(path), ctypes.c_uint(flags)
    )
    return _check(result, f"open_tree({flags:#x})", path)


def move_mount(from_dfd: int, from_path: str, to_dfd: int, to_path: str, flags: int) -> None:
    """move_mount(2) through syscall(): attach (or move) the mount ``from_dfd``/``from_path``
    names onto ``to_path``; MOVE_MOUNT_F_EMPTY_PATH takes the mount from ``from_dfd`` itself."""
    result = _libc.syscall(
        ctypes.c_long(SYS_move_mount),
        ctypes.c_int(from_dfd),
        _fs(from_path),
        ctypes.c_int(to_dfd),
        _fs(to_path),
        ctypes.c_uint(flags),
    )
    _check(result, f"move_mount(fd={from_dfd}, {flags:#x})", to_path)


def mount_setattr(
    dfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0, userns_fd: int = 0
) -> None:
    """mount_setattr(2) through syscall() with struct mount_attr. MOUNT_ATTR_IDMAP with
    ``userns_fd``: EINVAL when the filesystem does not support idmapped mounts or the mount
    is attached already; EPERM without CAP_SYS_ADMIN over the filesystem's user namespace
    or for the initial user namespace; ENOSYS before Linux 5.12."""
    attr = _MountAttr(attr_set, attr_clr, 0, userns_fd)
    result = _libc.syscall(
        ctypes.c_long(SYS_mount_setattr),
        ctypes.c_int(dfd),
        _fs(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr(fd={dfd}, set={attr_set:#x}, userns_fd={userns_fd})", path)


# <linux/prctl.h>: the container shim adopts the container's PID 1 (forked by a setup process
# that exits) as conmon does.
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


# <linux/sched.h>, <asm/unistd_64.h> (x86_64): clone3(2) since Linux 5.3, CLONE_INTO_CGROUP
# since 5.7; glibc has no clone3 wrapper.
SYS_clone3 = 435
CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    # struct clone_args (CLONE_ARGS_SIZE_VER2, 88 bytes): every field a __u64.
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
            "stack_size", "tls", "set_tid", "set_tid_size", "cgroup",
        )
    ]  # fmt: skip


# The GIL stays held across this call (PyDLL): the child returns into Python holding it,
# as the only thread, like a forked child.
_pylibc = ctypes.PyDLL(None, use_errno=True)


def fork_into_cgroup(cgroup_fd: int) -> int:
    """clone3(2) with CLONE_INTO_CGROUP and exit signal SIGCHLD: fork(2) whose child is born
    in the cgroup2 directory ``cgroup_fd`` (no cgroup.procs write: migrating a process takes
    cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period, ~10 ms). 0 in
    the child, its pid in the parent. ENOSYS before Linux 5.3, EINVAL for the flag before
    5.7; EBUSY, EOPNOTSUPP or EACCES when the cgroup cannot take the process.

    For a single-threaded process only. Python's and glibc's at-fork work is skipped: no
    os.register_at_fork callbacks, and glibc's cached thread id in the child stays the
    parent's until the child forks (so no pthread_kill(pthread_self()), raise(3) or abort(3)
    in the child before that; os.kill(os.getpid()) is fine)."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=17, cgroup=cgroup_fd)  # SIGCHLD
    result = _pylibc.syscall(
        ctypes.c_long(SYS_clone3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))
    )
    return _check(result, f"clone3(CLONE_INTO_CGROUP, cgroup fd {cgroup_fd})")
