"""The container's processes from the shim's fork to execve: namespaces, /, hardening, exec.

The shim forks the *setup* process, which runs ``setup_main`` (runc's nsexec stages and
standard_init_linux.go, in one single-threaded Python process):

    join the cgroup (cgroup.procs)            -- before the cgroup and user namespaces:
                                                 the host-side write needs host privileges
    RLIMIT_NOFILE                             -- raising a hard limit needs CAP_SYS_RESOURCE
                                                 in the initial user namespace
    [--userns auto] unshare(CLONE_NEWUSER); a helper forked before it writes the maps
    unshare(mnt, uts, ipc, pid, cgroup, time [, net])
    /proc/self/timens_offsets                 -- before any process enters the time ns
    fork                                      -- the child is PID 1 and in the time ns;
                                                 the setup process reports its pid and exits,
                                                 so the shim (a child subreaper) adopts it

and the container's PID 1 runs ``container_main``: wait for the shim's "go" (sent once it
has adopted it), the idmapped rootfs (--userns auto), hostname, loopback up, the filesystem
(runtime.container.mounts), no_new_privs, fds, capabilities and user
(runtime.security.process.harden), seccomp last, then execve. Every module is imported
before pivot_root: the host's files are gone after it.

Errors travel over the report pipe (close-on-exec, as runc's sync pipe): EOF after "pid N"
means the execve succeeded; "error CODE MESSAGE" means it did not: 127 not found, 126 not
executable, 125 anything else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from runtime import syscalls as sc
from runtime.container import init as container_init
from runtime.container.defaults import EXIT_FAILED as EXIT_FAILED
from runtime.container.mounts import MountSpec, setup_filesystem
from runtime.container.userns import (
    IdMap,
    UserNamespaceSpec,
    attach,
    idmapped_rootfs,
    map_text,
    write_maps,
)
from runtime.container.volumes import Volume, resolve_in_root
from runtime.security import capabilities, seccomp
from runtime.security.process import default_nofile, harden, set_rlimits

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
# <linux/sockios.h>, <net/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: ifr_name, then ifr_flags in the 24-byte union


@dataclass(frozen=True)
class ProcessConfig:
    """Everything the container's processes need, as plain data (JSON through the shim).

    ``cgroup_dir`` is the absolute cgroup2 directory to join; ``caps`` the effective set
    (capabilities.effective_set); ``uid_map``/``gid_map`` the maps' text for --userns auto
    (empty: the host's user namespace); ``time_offsets`` the text for
    /proc/self/timens_offsets (spec.TimeOffsets.lines()); ``idmap_rootfs`` attaches an
    idmapped mount of the rootfs; ``born_in_cgroup``: the setup process was forked into
    ``cgroup_dir`` (clone3 CLONE_INTO_CGROUP) and has no cgroup.procs write to make.
    """

    rootfs: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    hostname: str
    volumes: tuple[tuple[str, str, bool], ...]
    read_only: bool
    network: str
    caps: tuple[str, ...]
    init: bool
    cgroup_dir: str
    uid_map: str = ""
    gid_map: str = ""
    time_offsets: str = ""
    idmap_rootfs: bool = False
    oci: dict[str, Any] | None = None  # runtime.oci.init_process.OciProcess.to_dict()
    born_in_cgroup: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ProcessConfig:
        raw = json.loads(data)
        for key in ("argv", "env", "groups", "caps"):
            raw[key] = tuple(raw[key])
        raw["volumes"] = tuple((s, d, bool(ro)) for s, d, ro in raw["volumes"])
        return cls(**raw)

    @property
    def userns(self) -> bool:
        return bool(self.uid_map)


class SetupError(Exception):
    """A step of the setup failed; ``code`` is the exit status the CLI reports."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def send(fd: int, line: str) -> None:
    """One message line on a pipe (short writes are atomic under PIPE_BUF)."""
    os.write(fd, (line.replace("\n", " ") + "\n").encode()[:4096])


def report_failure(fd: int, code: int, message: str) -> None:
    with contextlib.suppress(OSError):
        send(fd, f"error {code} {message}")


def write_timens_offsets(text: str) -> None:
    """/proc/self/timens_offsets: "CLOCK SECONDS NANOSECONDS" lines, written after
    unshare(CLONE_NEWTIME) and before the first process enters it (time_namespaces(7));
    the kernel refuses it (EACCES) once a process is inside."""
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(text)
    except OSError as e:
        raise SetupError(f"time offsets {text.strip()!r}: {e.strerror}") from None


def loopback_up() -> None:
    """SIOCSIFFLAGS IFF_UP on ``lo`` in the new network namespace (netdevice(7))."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, ifr)[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def container_capabilities(cap_add: tuple[str, ...], cap_drop: tuple[str, ...]) -> frozenset[str]:
    """Docker's rules (capabilities.effective_set) minus CAP_MKNOD unless --cap-add names it.

    Docker keeps CAP_MKNOD because its device cgroup (on cgroup v2 a BPF_CGROUP_DEVICE
    program runc attaches) refuses to open any node but the default devices. corral attaches
    no device program, so with CAP_MKNOD a container could mknod the host's disk and open it.
    """
    caps = capabilities.effective_set(cap_add, cap_drop)
    if "CAP_MKNOD" in cap_add or "ALL" in cap_add:
        return caps
    return caps - {"CAP_MKNOD"}


def namespace_flags(config: ProcessConfig) -> int:
    """The unshare(2) flags after the user namespace: all but net with --network host."""
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
    flags |= sc.CLONE_NEWCGROUP | sc.CLONE_NEWTIME
    if config.network != "host":  # none, or bridge (runtime.network adds eth0 before "go")
        flags |= sc.CLONE_NEWNET
    return flags


def join_cgroup(cgroup_dir: str) -> None:
    """Move this process into its cgroup (cgroup.procs): "0" means the writer itself."""
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write("0")
    except OSError as e:
        raise SetupError(f"cannot join cgroup {cgroup_dir}: {e.strerror}") from None


def enter_user_namespace(config: ProcessConfig) -> None:
    """unshare(CLONE_NEWUSER), with the maps written from outside by a helper forked before
    it (a process in the parent user namespace with CAP_SETUID/CAP_SETGID there): setgroups
    "deny", uid_map, gid_map, in that order (user_namespaces(7)). Then become the
    namespace's root (uid 0 is unmapped until the maps exist)."""
    go_r, go_w = os.pipe()
    helper = os.fork()
    if helper == 0:  # the map writer
        os.close(go_w)
        code = 1
        try:
            if os.read(go_r, 1) == b"1":
                _write_maps(os.getppid(), config)
                code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    try:
        sc.unshare(sc.CLONE_NEWUSER)
    finally:
        os.write(go_w, b"1")
        os.close(go_w)
        _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SetupError(f"writing the uid/gid maps of pid {os.getpid()} failed")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # The id change made this process non-dumpable, which hands its /proc/self files to the
    # host's root (task_dump_owner: its mm belongs to the initial user namespace), out of
    # reach of the namespace's root: timens_offsets could not be written. runc's nsexec
    # sets it dumpable again too.
    sc.prctl(sc.PR_SET_DUMPABLE, 1)


def _spec_of(config: ProcessConfig) -> UserNamespaceSpec:
    def maps(text: str) -> tuple[IdMap, ...]:
        return tuple(IdMap(*map(int, line.split())) for line in text.splitlines())

    return UserNamespaceSpec(maps(config.uid_map), maps(config.gid_map))


def _write_maps(pid: int, config: ProcessConfig) -> None:
    """The maps of ``pid``. An OCI container keeps setgroups(2) for its additionalGids, as
    under runc run by root: only a gid_map written without CAP_SETGID over the parent
    namespace needs setgroups "deny" first (user_namespaces(7)), and this writer has it."""
    spec = _spec_of(config)
    if config.oci is None:
        write_maps(pid, spec)
        return
    for name, maps in (("uid_map", spec.uids), ("gid_map", spec.gids)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(map_text(maps))


def setup_main(config: ProcessConfig, report: int, control: int) -> None:
    """The setup process (see the module docstring); never returns."""
    code = EXIT_FAILED
    try:
        if not config.born_in_cgroup:
            join_cgroup(config.cgroup_dir)
        set_rlimits([default_nofile()])
        rootfs_fd = -1
        if config.idmap_rootfs:  # made from the host's user namespace, attached inside
            rootfs_fd = idmapped_rootfs(config.rootfs, _spec_of(config))
        if config.userns:
            enter_user_namespace(config)
        sc.unshare(namespace_flags(config))
        if config.time_offsets:
            write_timens_offsets(config.time_offsets)
        pid = os.fork()
        if pid == 0:
            container_main(config, report, control, rootfs_fd)
        send(report, f"pid {pid}")
        code = 0
    except SetupError as e:
        report_failure(report, e.code, str(e))
    except Exception as e:
        report_failure(report, EXIT_FAILED, f"container setup: {e}")
    os._exit(code)


def _lines(fd: int) -> Iterator[str]:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")
        data = os.read(fd, 4096)
        if not data:
            if buf:
                yield buf.decode(errors="replace")
            return
        buf += data


def _failure(line: str) -> SetupError:
    _, _, rest = line.partition(" ")
    code, _, message = rest.partition(" ")
    return SetupError(message, int(code) if code.isdigit() else EXIT_FAILED)


def wait_for_exec(
    setup: int,
    report: int,
    control: int,
    *,
    ready: bool = False,
    before_go: Callable[[int], None] | None = None,
) -> int:
    """In the setup process's parent: "pid N" from it, its exit (the shim, a subreaper, now
    adopts PID 1), "go" to PID 1, then EOF on the close-on-exec report pipe: the execve
    succeeded, and PID 1's host pid is returned. SetupError with the reported code and
    message otherwise (PID 1 is killed). With ``ready`` (an OCI create) PID 1 stops before
    execve and says "ready" instead of the EOF. ``before_go(pid)`` runs before "go" (the
    bridge network's hook); its failure kills PID 1 and raises SetupError."""
    lines = _lines(report)
    first = next(lines, "")
    status = os.waitpid(setup, 0)[1]
    if not first.startswith("pid "):
        if first.startswith("error "):
            raise _failure(first)
        raise SetupError(f"the setup process died ({container_init.exit_status(status)})")
    pid = int(first[4:])
    if before_go is not None:  # [F3] bridge networking: runtime.network.attach_from_state
        try:
            before_go(pid)
        except Exception as e:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise SetupError(f"network: {e}") from None
    os.write(control, b"go\n")
    os.close(control)
    second = next(lines, None)
    if ready and second == "ready":
        return pid
    if ready and second is None:
        second = f"error {EXIT_FAILED} the container's process exited during its setup"
    if second is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise _failure(second)
    return pid


def container_main(config: ProcessConfig, report: int, control: int, rootfs_fd: int) -> None:
    """PID 1 of the container (see the module docstring); never returns. ``rootfs_fd``: a
    detached idmapped mount of the rootfs to attach first (-1: none)."""
    try:
        if os.read(control, 16) != b"go\n":
            raise SetupError("the shim did not confirm the container's start")
        os.close(control)
        if rootfs_fd >= 0:
            attach_rootfs(rootfs_fd, config)
        program = seccomp.compile_filter(seccomp.default_policy(frozenset(config.caps)))
        sets = capabilities.docker_sets(frozenset(config.caps), config.uid)
        user = capabilities.User(config.uid, config.gid, config.groups)
        sc.sethostname(config.hostname)
        if config.network != "host":
            loopback_up()
        # The working directory is made before --read-only applies, as docker does.
        os.makedirs(resolve_in_root(config.rootfs, config.cwd), mode=0o755, exist_ok=True)
        setup_filesystem(mount_spec(config))
        harden(sets, user, keep_fds=(report,), rlimits=())
        os.chdir(config.cwd)
    except SetupError as e:
        report_failure(report, e.code, str(e))
        os._exit(e.code)
    except Exception as e:
        report_failure(report, EXIT_FAILED, f"container setup: {e}")
        os._exit(EXIT_FAILED)
    env = environment(config)
    if config.init:
        container_init.run(program, report, lambda: execute(config.argv, env, report))
    seccomp.install_filter(program)
    execute(config.argv, env, report)


def attach_rootfs(fd: int, config: ProcessConfig) -> None:
    """The idmapped rootfs on its own path, seen from the container's user namespace, whose
    root is an unprivileged host uid: every directory above the rootfs must let it search."""
    try:
        attach(fd, config.rootfs)
    except PermissionError:
        host_uid = config.uid_map.split()[1]
        raise SetupError(
            f"--userns auto: the container's root (host uid {host_uid}) cannot reach "
            f"{config.rootfs}: a directory above it is not searchable by other users; move "
            "the root filesystem or make its parents searchable (chmod o+x)"
        ) from None
    os.close(fd)


def mount_spec(config: ProcessConfig) -> MountSpec:
    volumes = tuple(Volume(src, dst, ro) for src, dst, ro in config.volumes)
    return MountSpec(config.rootfs, volumes, config.read_only, userns=config.userns)


def environment(config: ProcessConfig) -> dict[str, str]:
    """The container's environment: PATH and HOSTNAME by default, as docker sets them."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": config.hostname}
    if config.uid == 0:
        env["HOME"] = "/root"
    for item in config.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def exec_failure_code(err: OSError) -> int:
    """docker's statuses: 127 when the command does not exist, 126 when it cannot run."""
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return EXIT_NOT_FOUND
    if err.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return EXIT_NOT_EXECUTABLE
    return EXIT_FAILED


def execute(argv: tuple[str, ...], env: dict[str, str], report: int) -> None:
    """execve the command, looked up in the container's PATH; on failure report and exit.

    execve keeps ignored signals ignored and the signal mask: Python ignores SIGPIPE and
    SIGXFSZ, and whoever started corral may have ignored others (a signal ignored by the
    caller's caller is still ignored here). The command gets every signal at its default
    and none blocked, whatever corral inherited."""
    for sig in range(1, sc.SIGRTMAX + 1):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            sc.default_signal_disposition(sig)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        os.execvpe(argv[0], list(argv), env)
    except OSError as e:
        code = exec_failure_code(e)
        why = "not found" if code == EXIT_NOT_FOUND else "cannot be executed"
        reason = os.strerror(e.errno or 0)
        report_failure(report, code, f"{argv[0]}: {why} in the container ({reason})")
        os._exit(code)
