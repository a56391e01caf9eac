"""The container verbs: run (create, start the shim, wait), stop, kill, update, and the undo
of a run that failed.

``run`` follows container_api.md's sequence: ContainerCgroups.check (a limit this host cannot
enforce is refused before anything exists) -> StateStore.create -> ContainerCgroups.create
-> the shim (runtime/container/shim.py, a fresh ``python -I -S``; the CLI launches it
first, runtime.container.launch, and hands it the container here) -> "started PID" or
"error CODE MESSAGE" on the sync pipe. Any failure undoes every step (the cgroup with
whatever was in it, then the state directory); mounts need no undo, as they exist only in
the container's mount namespace.

``record_exit``, ``record_failure`` and ``remove_container`` run in the shim's short-lived
helpers when the lean records (runtime.container.record) cannot do the work alone: bridge
networking, a cgroup that needs killing; the starter lives in runtime.container.starter.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from dataclasses import dataclass, replace

from runtime.cgroupfs import CgroupError
from runtime.container.cgroup import ContainerCgroups
from runtime.container.launch import SHIM, Launched, launch, shim_flags
from runtime.container.limits import ContainerLimits, merged
from runtime.container.logs import now
from runtime.container.process import (
    EXIT_FAILED,
    ProcessConfig,
    container_capabilities,
)
from runtime.container.spec import ContainerSpec
from runtime.container.state import Container, ContainerNotFound, StateStore
from runtime.container.userns import auto_mapping, map_text

STOP_TIMEOUT = 10.0
SIGNAL_FORM = "a signal name (TERM, SIGTERM) or number (15)"


class ContainerError(Exception):
    """A verb failed; ``code`` is the CLI's exit status (125, or 126/127 for the command)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Started:
    """A running container and, for a foreground run, the shim's sync pipe."""

    container: Container
    pid: int
    sync: int  # -1 once closed


def process_config(spec: ContainerSpec, cgroup_dir: str) -> ProcessConfig:
    """What the shim hands the container's processes (plain data, JSON)."""
    caps = container_capabilities(spec.cap_add, spec.cap_drop)
    uid_map = gid_map = ""
    if spec.userns == "auto":
        mapping = auto_mapping()
        uid_map, gid_map = map_text(mapping.uids), map_text(mapping.gids)
    return ProcessConfig(
        rootfs=spec.rootfs,
        argv=spec.command,
        env=spec.env,
        cwd=spec.workdir,
        uid=spec.user.uid,
        gid=spec.user.gid,
        groups=spec.user.groups,
        hostname=spec.hostname,
        volumes=tuple((v.source, v.destination, v.read_only) for v in spec.volumes),
        read_only=spec.read_only,
        network=spec.network,
        caps=tuple(sorted(caps)),
        init=spec.init,
        cgroup_dir=cgroup_dir,
        time_offsets=spec.time_offsets.lines(),
        uid_map=uid_map,
        gid_map=gid_map,
        idmap_rootfs=spec.userns == "auto",
    )


def create(spec: ContainerSpec, store: StateStore, cgroups: ContainerCgroups) -> Container:
    """The state directory and the cgroup (named after the id), or nothing on failure."""
    cgroups.check(spec.limits)
    container = store.create(spec)
    path = None
    try:
        path = cgroups.create(container.id, spec.limits)
        return store.update(container.id, cgroup=path)
    except BaseException:
        if path is not None:
            cgroups.remove(path)
        store.remove(container.id)
        raise


def undo(store: StateStore, cgroups: ContainerCgroups, container: Container) -> None:
    """Remove what ``create`` and a failed start made: the cgroup (killing anything left in
    it), then the state directory."""
    try:
        cgroups.remove(container.cgroup)
    finally:
        from runtime import network  # here: the package costs every start ~5 ms

        network.detach(container.id, store.root)  # [F3] veth, nft rules, lease
        store.remove(container.id)


def run(
    spec: ContainerSpec, store: StateStore, cgroups: ContainerCgroups, *, attach: bool,
    launched: Launched | None = None,
) -> Started:  # fmt: skip
    """Create and start the container; ContainerError (nothing left) when it cannot run.
    ``launched``: its shim, started ahead (runtime.container.launch), cancelled on failure."""
    try:
        container = create(spec, store, cgroups)
    except BaseException:
        if launched is not None:
            launched.cancel()
        raise
    try:
        config = process_config(spec, str(cgroups.fs.path(container.cgroup)))
        sync = spawn_shim(store, container, config, attach=attach, launched=launched)
        try:
            pid = wait_started(sync)
        except BaseException:
            os.close(sync)
            raise
        if not attach:
            os.close(sync)
            sync = -1
        # not read back from the store: with --rm the shim may have removed it already
        return Started(replace(container, status="running", pid=pid), pid, sync)
    except BaseException:
        undo(store, cgroups, container)
        raise


def spawn_shim(
    store: StateStore, container: Container, config: ProcessConfig, *, attach: bool,
    launched: Launched | None = None,
) -> int:  # fmt: skip
    """Hand the container to its shim (``launched`` by the CLI ahead of time, or started
    now; it detaches itself); the read end of its sync pipe."""
    if launched is None:
        launched = launch(store.root, attach=attach, rm=container.spec.rm)
    wanted = (store.root, shim_flags(attach=attach, rm=container.spec.rm))
    if (launched.state_dir, launched.flags) != wanted:
        launched.cancel()
        raise ValueError(
            f"the shim was launched for {launched.state_dir, launched.flags}: not {wanted}"
        )
    log = store.log_path(container.id)
    try:
        status = launched.send(
            container.id, container.cgroup, config.cgroup_dir, log, config.to_json()
        )
    except BaseException:
        launched.cancel()
        raise
    if status != 0:
        launched.cancel()
        raise ContainerError(f"the shim {SHIM} failed to start (status {status})")
    return launched.take_sync()


def read_line(fd: int) -> str | None:
    """One line from the sync pipe (the shim writes each in one write); None at EOF."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            return buf.decode(errors="replace") or None
        buf += chunk
    return buf[:-1].decode(errors="replace")


def wait_started(sync: int) -> int:
    """The container's PID 1 once its command runs (or, for an OCI create, once it waits on
    its exec fifo); ContainerError with the shim's error."""
    line = read_line(sync)
    if line is None:
        raise ContainerError("the shim exited before the container started")
    word, _, rest = line.partition(" ")
    if word in ("started", "created"):
        return int(rest)
    code, _, message = rest.partition(" ")
    raise ContainerError(message, int(code) if code.isdigit() else EXIT_FAILED)


def wait_exit(store: StateStore, started: Started) -> int:
    """For a foreground run: the container's exit code once the shim recorded it."""
    line = read_line(started.sync)
    os.close(started.sync)
    started.sync = -1
    if line is not None and line.startswith("exit "):
        return int(line[5:])
    try:
        container = store.get(started.container.id)
    except LookupError:
        return EXIT_FAILED
    return container.exit_code if container.exit_code is not None else EXIT_FAILED


# -- the shim's helpers ------------------------------------------------------------------------


def record_exit(state_dir: str, container_id: str, cgroup: str, code: int) -> None:
    from runtime import network

    network.detach(container_id, state_dir)  # [F3] veth, nft rules, lease (idempotent)
    cgroups = ContainerCgroups(parent=cgroup.rsplit("/", 1)[0] or "corral")
    oom = False
    # `corral oci delete` removes the cgroup and the state as soon as PID 1 is dead, without
    # waiting for this record: nothing is left to record then.
    with contextlib.suppress(CgroupError):
        oom = cgroups.oom_killed(cgroup)
    with contextlib.suppress(ContainerNotFound):
        StateStore(state_dir).update(
            container_id, status="stopped", exit_code=code, oom_killed=oom, finished=now()
        )


def record_failure(state_dir: str, container_id: str, code: int, message: str) -> None:
    from runtime import network

    network.detach(container_id, state_dir)  # [F3]
    StateStore(state_dir).update(
        container_id, status="stopped", exit_code=code, error=message, finished=now()
    )


def remove_container(state_dir: str, container_id: str, cgroup: str) -> None:
    """--rm: the cgroup, then the state directory (the log with it)."""
    from runtime import network

    network.detach(container_id, state_dir)  # [F3]
    ContainerCgroups(parent=cgroup.rsplit("/", 1)[0] or "corral").remove(cgroup)
    StateStore(state_dir).remove(container_id)


# -- stop, kill, update ------------------------------------------------------------------------


def parse_signal(text: str) -> int:
    """``-s`` as docker takes it: KILL, SIGKILL, sigkill or 9."""
    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signal.valid_signals() if isinstance(s, signal.Signals)}:
            return number
        raise ContainerError(f"signal {text!r}: no such signal number; allowed {SIGNAL_FORM}")
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ContainerError(f"signal {text!r}: unknown; allowed {SIGNAL_FORM}") from None


def running(store: StateStore, ref: str) -> Container:
    """The container, refreshed; ContainerError unless it is running."""
    container = store.refresh(store.get(ref))
    if container.status != "running" or container.pid is None:
        raise ContainerError(f"container {container.name} is not running ({container.status})")
    return container


def send_signal(container: Container, sig: int) -> None:
    """``sig`` to the container's PID 1 through a pidfd (no pid-reuse race once it is open),
    after checking that the pid is still a member of the container's cgroup."""
    assert container.pid is not None
    try:
        pidfd = os.pidfd_open(container.pid)
    except ProcessLookupError:
        return
    try:
        with open(f"/proc/{container.pid}/cgroup") as f:
            if not f.read().rstrip().endswith("/" + container.cgroup.strip("/")):
                return
        signal.pidfd_send_signal(pidfd, sig)
    except (ProcessLookupError, FileNotFoundError):
        pass
    finally:
        os.close(pidfd)


def kill(store: StateStore, ref: str, sig: int = signal.SIGKILL) -> Container:
    container = running(store, ref)
    send_signal(container, sig)
    return container


def wait_stopped(store: StateStore, container: Container, timeout: float) -> bool:
    """True once the shim recorded the exit (or removed the container) within ``timeout``."""
    deadline = time.monotonic() + timeout
    pidfd = None
    if container.pid is not None:
        try:
            pidfd = os.pidfd_open(container.pid)
        except ProcessLookupError:
            pidfd = None
    try:
        while True:
            try:
                current = store.refresh(store.get(container.id))
            except LookupError:
                return True
            if current.status == "stopped":
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if pidfd is not None:
                select.select([pidfd], [], [], min(left, 0.05))
            else:
                time.sleep(min(left, 0.05))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def stop(
    store: StateStore, cgroups: ContainerCgroups, ref: str, timeout: float = STOP_TIMEOUT
) -> Container:
    """SIGTERM to PID 1; after ``timeout`` seconds cgroup.kill; returns once recorded."""
    container = store.refresh(store.get(ref))
    if container.status != "running":
        return container
    send_signal(container, signal.SIGTERM)
    if not wait_stopped(store, container, timeout):
        cgroups.kill(container.cgroup)
        if not wait_stopped(store, container, STOP_TIMEOUT):
            raise ContainerError(f"container {container.name} did not stop after cgroup.kill")
    return container


def update(
    store: StateStore, cgroups: ContainerCgroups, ref: str, limits: ContainerLimits
) -> Container:
    """Write ``limits`` (only those given) to the container's cgroup, under the container's
    lock so that two updates never interleave their writes, and record the limits now in
    force in its config (what `corral inspect` shows once the cgroup is gone)."""
    with store.locked(ref) as container:
        if not cgroups.fs.exists(container.cgroup):
            raise ContainerError(f"container {container.name} has no cgroup {container.cgroup}")
        cgroups.check(limits)
        cgroups.update(container.cgroup, limits)
        spec = replace(container.spec, limits=merged(container.spec.limits, limits))
        return store.update_spec(container.id, spec)
