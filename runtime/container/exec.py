"""``corral exec``: a new process in a running container (runc exec, nsenter).

The caller (the CLI) prepares everything that needs the host -- the namespace fds of the
container's PID 1 (/proc/PID/ns/*), the capability sets and the compiled seccomp filter --
then forks a joiner (single-threaded: setns(2) into a user namespace fails with EINVAL in a
multithreaded process), which:

    sets RLIMIT_NOFILE               -- needs CAP_SYS_RESOURCE of the initial user namespace
    joins the container's cgroup     -- the host-side cgroup.procs write, before the user and
                                        cgroup namespaces
    setns user (when the container has its own), then ipc, uts, net, cgroup, pid, time, and
    mnt last (setns into a mount namespace also sets root and cwd to its root)
    forks                            -- pid and time namespaces apply to children

and the child hardens exactly as the container's PID 1 did (rlimits, no_new_privs, fds,
capabilities and user, seccomp last), enters the working directory and execs the command.
The joiner forwards signals to it and exits with its status (128+N for signal N). An
execve failure comes back on a close-on-exec pipe: 127 not found, 126 not executable.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from runtime import syscalls as sc
from runtime.container import init as container_init
from runtime.container.process import (
    EXIT_FAILED,
    SetupError,
    container_capabilities,
    execute,
    join_cgroup,
    report_failure,
)
from runtime.container.state import Container
from runtime.security import capabilities, seccomp
from runtime.security.capabilities import CapabilitySets, User
from runtime.security.process import default_nofile, harden, set_rlimits

# setns order after the user namespace: mnt last (it changes / and the cwd).
JOIN_ORDER = ("ipc", "uts", "net", "cgroup", "pid", "time", "mnt")
FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip


@dataclass(frozen=True)
class ExecPlan:
    """Everything the joiner and the command need, made before forking."""

    namespaces: tuple[tuple[str, int], ...]  # (name, fd of /proc/PID/ns/NAME), join order
    cgroup_dir: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    user: User
    sets: CapabilitySets
    program: bytes


def namespaces_to_join(pid: int) -> list[tuple[str, int]]:
    """Open /proc/PID/ns/NAME for each namespace the container does not share with this
    process (compared by inode), user first, then JOIN_ORDER."""
    joined = []
    for name in ("user", *JOIN_ORDER):
        theirs = os.stat(f"/proc/{pid}/ns/{name}").st_ino
        if theirs != os.stat(f"/proc/self/ns/{name}").st_ino:
            joined.append((name, os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)))
    return joined


def plan(
    container: Container,
    cgroup_dir: str,
    argv: tuple[str, ...],
    *,
    env: tuple[str, ...] = (),
    workdir: str | None = None,
    user: User | None = None,
) -> ExecPlan:
    """The plan for ``argv`` in the running ``container`` (its pid must be set)."""
    spec = container.spec
    assert container.pid is not None
    caps = container_capabilities(spec.cap_add, spec.cap_drop)
    who = spec.user if user is None else user
    environ = environment_of(spec.env, env, spec.hostname, who.uid)
    program = seccomp.compile_filter(seccomp.default_policy(caps))
    return ExecPlan(
        namespaces=tuple(namespaces_to_join(container.pid)),
        cgroup_dir=cgroup_dir,
        argv=argv,
        env=environ,
        cwd=workdir or spec.workdir,
        user=who,
        sets=capabilities.docker_sets(caps, who.uid),
        program=program,
    )


def environment_of(
    base: tuple[str, ...], extra: tuple[str, ...], hostname: str, uid: int
) -> dict[str, str]:
    """The container's environment with ``-e K=V`` (or ``-e K`` from the caller's) over it."""
    env = dict(item.partition("=")[::2] for item in base)
    env.setdefault("HOSTNAME", hostname)
    if uid == 0:
        env.setdefault("HOME", "/root")
    for item in extra:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
        else:
            env.pop(key, None)
    return env


def run(exec_plan: ExecPlan) -> int:
    """Run the plan; the command's exit status (125 when joining failed)."""
    report_r, report_w = os.pipe()
    joiner = os.fork()
    if joiner == 0:
        os.close(report_r)
        join_and_run(exec_plan, report_w)
    os.close(report_w)
    for _, fd in exec_plan.namespaces:
        os.close(fd)
    previous = {sig: signal.signal(sig, _forward_to(joiner)) for sig in FORWARDED}
    try:
        message = b"".join(iter(lambda: os.read(report_r, 4096), b""))
        os.close(report_r)
        status = os.waitpid(joiner, 0)[1]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if message:
        _, code, text = message.decode(errors="replace").strip().split(" ", 2)
        raise SetupError(text, int(code))
    return container_init.exit_status(status)


def _forward_to(pid: int) -> Callable[[int, FrameType | None], None]:
    def forward(sig: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    return forward


def join_and_run(exec_plan: ExecPlan, report: int) -> None:
    """The joiner (see the module docstring); never returns."""
    try:
        set_rlimits([default_nofile()])
        join_cgroup(exec_plan.cgroup_dir)
        for name, fd in exec_plan.namespaces:
            sc.setns(fd, sc.NAMESPACE_FLAGS[name])
            os.close(fd)
        child = os.fork()
    except Exception as e:
        report_failure(report, EXIT_FAILED, f"joining the container: {e}")
        os._exit(EXIT_FAILED)
    if child == 0:
        command(exec_plan, report)
    os.close(report)
    for sig in FORWARDED:
        signal.signal(sig, _forward_to(child))
    container_init.reap(child)


def command(exec_plan: ExecPlan, report: int) -> None:
    """The command's process, in the container's pid and time namespaces; never returns."""
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        harden(exec_plan.sets, exec_plan.user, keep_fds=(report,), rlimits=())
        os.chdir(exec_plan.cwd)
        seccomp.install_filter(exec_plan.program)
    except Exception as e:
        report_failure(report, EXIT_FAILED, f"exec setup: {e}")
        os._exit(EXIT_FAILED)
    execute(exec_plan.argv, exec_plan.env, report)
