"""An OCI container's setup process and PID 1: runc's nsexec and standard_init_linux.go,
following config.json where corral's `corral run` follows its own defaults.

The setup process (forked by the shim's starter, as for `corral run`):

    join the cgroup (cgroup.procs)          -- host-side, before any namespace
    process.rlimits (prlimit)               -- raising a hard limit needs CAP_SYS_RESOURCE in
                                               the initial user namespace: before a user ns
    setns every namespace given by path     -- opened first, the user namespace joined first
                                               (nsexec's order), then setresuid/gid(0)
    unshare(CLONE_NEWUSER) if a new one     -- maps written from outside by a helper
    unshare(the other new namespaces)       -- only the types the config lists
    /proc/self/timens_offsets               -- before any process enters the time ns
    fork                                    -- PID 1 of a new pid ns

The exec fifo is opened O_PATH first, as the host's root: the container's root may not
reach the state directory, and nothing reaches it after pivot_root.

PID 1 (``container_main``): the shim's "go", loopback up in a new network namespace (runc's
"loopback" network), the mounts in order (runtime.oci.init_mounts), hostname, linux.sysctl,
readonlyPaths, maskedPaths, root.readonly, seccomp (corral's default profile: before the
capabilities drop when noNewPrivileges is false, as it then needs CAP_SYS_ADMIN), rlimits
were set by the parent, no_new_privs as configured, the five capability sets and the user,
umask (runc's 0022 when not given), cwd; then "ready" on the report pipe and the exec fifo:
open(2) of /proc/self/fd/FIFO for writing blocks until `corral oci start` opens it for
reading (runc's exec.fifo). Until then every catchable signal ends PID 1 with 128+N, so
`kill` works on a created container (an init gets no signal it has no handler for:
pid_namespaces(7)).
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict, dataclass
from typing import Any

from runtime import syscalls as sc
from runtime.container.mounts import make_root_readonly, mask_paths, readonly_paths
from runtime.container.process import (
    EXIT_FAILED,
    ProcessConfig,
    SetupError,
    enter_user_namespace,
    execute,
    join_cgroup,
    loopback_up,
    report_failure,
    send,
    write_timens_offsets,
)
from runtime.container.volumes import resolve_in_root
from runtime.oci.init_mounts import OciMountPlan, setup_rootfs, write_sysctl
from runtime.security import capabilities, seccomp
from runtime.security.capabilities import CapabilitySets
from runtime.security.process import harden, set_rlimits

NAMESPACE_FLAGS = {
    "user": sc.CLONE_NEWUSER,
    "mount": sc.CLONE_NEWNS,
    "uts": sc.CLONE_NEWUTS,
    "ipc": sc.CLONE_NEWIPC,
    "network": sc.CLONE_NEWNET,
    "pid": sc.CLONE_NEWPID,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}
CAPABILITY_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
DEFAULT_UMASK = 0o022  # runc's, when process.user.umask is absent
# Signals whose default action is to ignore: an init keeps ignoring them while it waits.
_IGNORED = {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH}


@dataclass(frozen=True)
class OciExec:
    """What an OCI container needs beyond ProcessConfig, as plain data (JSON via the shim).

    ``namespaces``: (type, path or "") in the config's order; ``capabilities`` the five
    sets in CAPABILITY_SETS order; ``mounts`` as init_mounts.OciMountPlan fields."""

    namespaces: tuple[tuple[str, str], ...]
    capabilities: tuple[tuple[str, ...], ...]
    rlimits: tuple[tuple[str, int, int], ...]
    no_new_privileges: bool
    umask: int | None
    mounts: tuple[OciMountPlan, ...]
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    sysctl: tuple[tuple[str, str], ...]
    exec_fifo: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OciExec:
        mounts = tuple(
            OciMountPlan(
                m["destination"], m["fstype"], m["source"], m["flags"], tuple(m["propagation"]),
                m["data"],
            )
            for m in raw["mounts"]
        )  # fmt: skip
        return cls(
            namespaces=tuple((t, p) for t, p in raw["namespaces"]),
            capabilities=tuple(tuple(s) for s in raw["capabilities"]),
            rlimits=tuple((n, s, h) for n, s, h in raw["rlimits"]),
            no_new_privileges=raw["no_new_privileges"],
            umask=raw["umask"],
            mounts=mounts,
            masked_paths=tuple(raw["masked_paths"]),
            readonly_paths=tuple(raw["readonly_paths"]),
            sysctl=tuple((k, v) for k, v in raw["sysctl"]),
            exec_fifo=raw["exec_fifo"],
        )

    def new(self, kind: str) -> bool:
        """Whether a new namespace of ``kind`` is made (listed without a path)."""
        return (kind, "") in self.namespaces

    def listed(self, kind: str) -> bool:
        return any(t == kind for t, _ in self.namespaces)

    def capability_sets(self) -> CapabilitySets:
        """The five sets; ambient capabilities outside inheritable or permitted are left out,
        as the kernel refuses to raise them and runc goes on with a warning."""
        sets = dict(zip(CAPABILITY_SETS, map(frozenset, self.capabilities), strict=True))
        sets["ambient"] &= sets["inheritable"] & sets["permitted"]
        return CapabilitySets(**sets)


def join_namespaces(namespaces: tuple[tuple[str, str], ...]) -> None:
    """setns(2) into every namespace given by path: all opened first (a joined mount ns
    changes what later paths mean), the user namespace first, as runc's nsexec does (a
    runtime that is not root in the initial user namespace could join the others only with
    the capabilities it gets there; corral, root there, could join them in any order), then
    setresuid/setresgid(0) in it, which must be mapped."""
    opened: list[tuple[str, int]] = []
    try:
        for kind, path in namespaces:
            if path:
                try:
                    opened.append((kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
                except OSError as e:
                    raise SetupError(f"linux.namespaces {kind} path {path}: {e.strerror}") from None
        opened.sort(key=lambda item: item[0] != "user")
        for kind, fd in opened:
            try:
                sc.setns(fd, NAMESPACE_FLAGS[kind])
            except OSError as e:
                raise SetupError(f"setns into the {kind} namespace: {e.strerror}") from None
            if kind == "user":
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
    finally:
        for _, fd in opened:
            os.close(fd)


def setup_main(config: ProcessConfig, report: int, control: int) -> None:
    """The setup process of an OCI container (module docstring); never returns."""
    code = EXIT_FAILED
    try:
        assert config.oci is not None
        oci = OciExec.from_dict(config.oci)
        if not config.born_in_cgroup:
            join_cgroup(config.cgroup_dir)
        # Opened as the host's root, before any namespace: the state directory may not be
        # searchable by the container's root (an unprivileged host uid in a user ns).
        fifo = os.open(oci.exec_fifo, os.O_PATH | os.O_CLOEXEC)
        set_rlimits(oci.rlimits)
        join_namespaces(oci.namespaces)
        if oci.new("user"):
            enter_user_namespace(config)
        flags = 0
        for kind, path in oci.namespaces:
            if not path and kind != "user":
                flags |= NAMESPACE_FLAGS[kind]
        sc.unshare(flags)
        if config.time_offsets:
            write_timens_offsets(config.time_offsets)
        pid = os.fork()
        if pid == 0:
            container_main(config, oci, report, control, fifo)
        send(report, f"pid {pid}")
        code = 0
    except SetupError as e:
        report_failure(report, e.code, str(e))
    except Exception as e:
        report_failure(report, EXIT_FAILED, f"container setup: {e}")
    os._exit(code)


def environment(env: tuple[str, ...], uid: int, passwd: str = "/etc/passwd") -> dict[str, str]:
    """process.env as given, plus HOME when it has none: the uid's home directory from the
    container's /etc/passwd (read after pivot_root), else "/", as runc and crun do
    (libcontainer/init_linux.go)."""
    out = dict(item.partition("=")[::2] for item in env)
    if "HOME" not in out:
        out["HOME"] = home_of(uid, passwd)
    return out


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of ``uid`` in a passwd(5) file; "/" when it is not listed."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
                    return fields[5]
    except OSError:
        pass
    return "/"


def prepare(config: ProcessConfig, oci: OciExec, report: int, fifo: int) -> bytes:
    """Everything of PID 1 up to the exec fifo; the seccomp program still to install."""
    sets = oci.capability_sets()
    program = seccomp.compile_filter(seccomp.default_policy(sets.bounding))
    user = capabilities.User(config.uid, config.gid, config.groups)
    if oci.new("network"):
        loopback_up()
    os.makedirs(resolve_in_root(config.rootfs, config.cwd), mode=0o755, exist_ok=True)
    setup_rootfs(config.rootfs, oci.mounts, userns=oci.listed("user"))
    if config.hostname:
        sc.sethostname(config.hostname)
    write_sysctl(dict(oci.sysctl))
    readonly_paths(oci.readonly_paths)
    mask_paths(oci.masked_paths)
    if config.read_only:
        make_root_readonly()
    if not oci.no_new_privileges:  # seccomp then needs CAP_SYS_ADMIN: before the drop
        seccomp.install_filter(program)
    harden(sets, user, keep_fds=(report, fifo), rlimits=(), no_new_privs=oci.no_new_privileges)
    os.umask(DEFAULT_UMASK if oci.umask is None else oci.umask)
    os.chdir(config.cwd)
    return program


def wait_for_start(fifo: int) -> None:
    """Block in open(2) of the exec fifo until `corral oci start` opens it for reading;
    a catchable signal meanwhile ends this process with 128+N."""

    def die(sig: int, _frame: object) -> None:
        os._exit(128 + sig)

    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP, *_IGNORED):
            signal.signal(sig, die)
    fd = os.open(f"/proc/self/fd/{fifo}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo)


def container_main(
    config: ProcessConfig, oci: OciExec, report: int, control: int, fifo: int
) -> None:
    """PID 1 of an OCI container (module docstring); never returns. ``fifo``: the exec
    fifo, opened O_PATH by the setup process."""
    try:
        if os.read(control, 16) != b"go\n":
            raise SetupError("the shim did not confirm the container's start")
        os.close(control)
        program = prepare(config, oci, report, fifo)
        env = environment(config.env, config.uid)
        send(report, "ready")
        # From here on, errors (an execve that fails after start) go to the container's
        # stderr, as runc's: nobody reads the report pipe once the container is created.
        os.dup2(2, report, inheritable=False)
        wait_for_start(fifo)
    except SetupError as e:
        report_failure(report, e.code, str(e))
        os._exit(e.code)
    except Exception as e:
        report_failure(report, EXIT_FAILED, f"container setup: {e}")
        os._exit(EXIT_FAILED)
    if oci.no_new_privileges:
        seccomp.install_filter(program)
    execute(config.argv, env, report)
