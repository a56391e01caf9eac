"""`corral oci create|start|state|kill|delete` (runtime-spec runtime.md "Operations").

create: config.json (runtime.oci.config.load_bundle) -> the limits checked against the
cgroup2 root (a controller this host lacks is refused before anything exists) ->
StateStore.create (kind "oci", the OCI id as the name: "creating") -> the cgroup (corral/ID
or linux.cgroupsPath) with linux.resources, its extra files and linux.resources.unified
written verbatim -> the exec fifo (mkfifo, as runc's exec.fifo) -> the shim, whose PID 1
sets everything up and blocks opening the fifo -> "created PID" on the sync pipe
("created"). Any failure undoes every step done.

start opens the fifo for reading and reads the byte PID 1 writes before its execve
("running"); kill signals PID 1 (created or running); delete removes the cgroup and the
state directory of a stopped container, and kills a created one first (as runc does); a
running one only with ``force``. A verb in a status that does not allow it changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Mapping
from dataclasses import replace

from runtime.container.cgroup import DEFAULT_PARENT, ContainerCgroups, LimitUnavailable
from runtime.container.launch import Launched
from runtime.container.lifecycle import (
    Started,
    send_signal,
    spawn_shim,
    wait_started,
)
from runtime.container.logs import now
from runtime.container.process import ProcessConfig
from runtime.container.record import write_atomic
from runtime.container.spec import ContainerSpec, TimeOffsets
from runtime.container.state import Container, StateStore
from runtime.container.userns import map_text
from runtime.oci.config import OciConfig, load_bundle
from runtime.oci.init_mounts import plan
from runtime.oci.init_process import CAPABILITY_SETS, OciExec
from runtime.oci.state import EXEC_FIFO, OciError, OciStateError, check_id, oci_status, require
from runtime.security.capabilities import User

START_TIMEOUT = 10.0  # seconds for PID 1 to take the fifo's byte
STOP_TIMEOUT = 10.0  # for the cgroup to be empty after cgroup.kill


def find(store: StateStore, container_id: str) -> Container:
    """The OCI container with this id, reconciled with the host (a dead shim: stopped)."""
    container = store.refresh(store.by_name(check_id(container_id)))
    if container.kind != "oci":
        raise OciError(
            f"container {container_id} was made by `corral run`, not as an OCI container: "
            "use corral stop/kill/rm"
        )
    return container


def cgroup_location(
    config: OciConfig, container_id: str, parent: str = DEFAULT_PARENT
) -> tuple[str, str]:
    """(parent, name) of the container's cgroup: linux.cgroupsPath, else PARENT/ID."""
    if config.cgroups_path is None:
        return parent, container_id
    parent, _, name = config.cgroups_path.strip("/").rpartition("/")
    if not parent:
        raise OciError(
            f"linux.cgroupsPath {config.cgroups_path!r}: allowed PARENT/NAME (corral keeps "
            "no container directly under the cgroup2 root)"
        )
    return parent, name


def cgroup_files(config: OciConfig) -> dict[str, str]:
    """The files written verbatim after the limits: linux.resources' extra ones, then
    linux.resources.unified (which wins, as in runc and crun)."""
    return {**config.resource_files, **config.unified}


def check_files(cgroups: ContainerCgroups, files: Mapping[str, str]) -> None:
    """LimitUnavailable for a file whose controller the cgroup2 root does not offer (the
    refusal ContainerCgroups.check gives a limit); cgroup.* and other core files pass."""
    offered = cgroups.fs.controllers("")
    core = ("cgroup", "")
    for key, value in files.items():
        controller = key.partition(".")[0]
        if controller not in core and controller not in offered:
            reason = f"not in {cgroups.root}/cgroup.controllers"
            raise LimitUnavailable(f"linux.resources {key}", value, controller, reason)


def write_files(cgroups: ContainerCgroups, path: str, files: Mapping[str, str]) -> None:
    for key, value in files.items():
        target = os.path.join(str(cgroups.fs.path(path)), key)
        try:
            with open(target, "w") as f:
                f.write(value)
        except OSError as e:
            raise OciError(f"linux.resources {key}={value!r}: {target}: {e.strerror}") from None


def check_runnable(config: OciConfig) -> None:
    """What the execution needs beyond a valid config: a mount namespace to build the root
    in (runc: "rootfs requires a mount namespace")."""
    if config.namespace("mount") is None:
        raise OciError(
            "linux.namespaces: no mount namespace: corral builds the root filesystem in one "
            '(add {"type": "mount"})'
        )


def spec_of(config: OciConfig, container_id: str, *, rm: bool) -> ContainerSpec:
    """The ContainerSpec `corral ps` and `inspect` show for an OCI container."""
    p = config.process
    return ContainerSpec(
        name=container_id, rootfs=config.root, command=p.args, env=p.env,
        workdir=p.cwd, user=User(p.uid, p.gid, p.additional_gids),
        hostname=config.hostname or "", volumes=(), read_only=config.root_readonly,
        labels=tuple(config.annotations.items()), init=False, limits=config.limits,
        userns="host", time_offsets=config.time_offsets or TimeOffsets(),
        network="host" if config.namespace("network") is None else "none",
        cap_add=(), cap_drop=(), detach=True, rm=rm,
    )  # fmt: skip


def process_config(config: OciConfig, bundle: str, cgroup_dir: str, fifo: str) -> ProcessConfig:
    """What the shim hands the setup process and PID 1."""
    new_user = any(ns.type == "user" and ns.path is None for ns in config.namespaces)
    p = config.process
    caps, mounts = p.capabilities, config.mounts
    oci = OciExec(
        namespaces=tuple((ns.type, ns.path or "") for ns in config.namespaces),
        capabilities=tuple(tuple(sorted(getattr(caps, name))) for name in CAPABILITY_SETS),
        rlimits=p.rlimits,
        no_new_privileges=p.no_new_privileges,
        umask=p.umask,
        mounts=tuple(plan(m.destination, m.type, m.source, m.options, bundle) for m in mounts),
        masked_paths=config.masked_paths,
        readonly_paths=config.readonly_paths,
        sysctl=tuple(config.sysctl.items()),
        exec_fifo=fifo,
    )
    net = config.namespace("network")
    return ProcessConfig(
        rootfs=config.root, argv=p.args, env=p.env, cwd=p.cwd, uid=p.uid,
        gid=p.gid, groups=p.additional_gids, hostname=config.hostname or "",
        volumes=(), read_only=config.root_readonly,
        network="none" if net is not None and net.path is None else "host", caps=(),
        init=False, cgroup_dir=cgroup_dir,
        uid_map=map_text(config.uid_mappings) if new_user else "",
        gid_map=map_text(config.gid_mappings) if new_user else "",
        time_offsets=config.time_offsets.lines() if config.time_offsets else "",
        oci=oci.to_dict(),
    )  # fmt: skip


def create(
    container_id: str,
    bundle: str,
    store: StateStore,
    *,
    pid_file: str | None = None,
    attach: bool = False,
    rm: bool = False,
    parent: str = DEFAULT_PARENT,
    launched: Launched | None = None,
) -> Started:
    """The container set up, PID 1 waiting before execve ("created"); with ``attach`` the
    shim's sync pipe stays open for `corral run --bundle` (output, then "exit CODE"), and
    ``rm`` has the shim remove it after the exit. ``parent``: without linux.cgroupsPath,
    the cgroup is PARENT/ID. ``launched``: the shim, started ahead by the CLI
    (runtime.container.launch); cancelled when the container cannot be made."""
    try:
        return _create(
            container_id, bundle, store, pid_file=pid_file, attach=attach, rm=rm,
            parent=parent, launched=launched,
        )  # fmt: skip
    except BaseException:
        if launched is not None:
            launched.cancel()
        raise


def _create(
    container_id: str, bundle: str, store: StateStore, *, pid_file: str | None, attach: bool,
    rm: bool, parent: str, launched: Launched | None,
) -> Started:  # fmt: skip
    check_id(container_id)
    bundle = os.path.abspath(bundle)
    config = load_bundle(bundle)
    check_runnable(config)
    parent, name = cgroup_location(config, container_id, parent)
    cgroups = ContainerCgroups(parent=parent)
    files = cgroup_files(config)
    cgroups.check(config.limits)
    check_files(cgroups, files)
    with contextlib.suppress(LookupError):
        store.by_name(container_id)
        raise OciError(f"container id {container_id} already exists")
    spec = spec_of(config, container_id, rm=rm)
    container = store.create(spec, cgroup=f"{parent}/{name}", kind="oci", bundle=bundle)
    made = False
    try:
        cgroups.ensure_parent(key.partition(".")[0] for key in files)
        path = cgroups.create(name, config.limits)
        made = True
        container = store.update(container.id, cgroup=path)
        write_files(cgroups, path, files)
        fifo = os.path.join(store.container_dir(container.id), EXEC_FIFO)
        os.mkfifo(fifo, 0o600)
        os.chmod(fifo, 0o622)  # PID 1 may run as any uid by then (runc: 0622)
        pconfig = process_config(config, bundle, str(cgroups.fs.path(path)), fifo)
        return _start_shim(
            store, container, pconfig, attach=attach, pid_file=pid_file, launched=launched
        )
    except BaseException:
        try:
            if made:
                cgroups.remove(container.cgroup)
        finally:
            store.remove(container.id)
        raise


def _start_shim(
    store: StateStore, container: Container, config: ProcessConfig, *, attach: bool,
    pid_file: str | None, launched: Launched | None,
) -> Started:  # fmt: skip
    sync = spawn_shim(store, container, config, attach=attach, launched=launched)
    try:
        pid = wait_started(sync)
        if pid_file is not None:  # runc writes it once the container is created
            write_atomic(os.path.abspath(pid_file), f"{pid}".encode(), 0o644)
    except BaseException:
        os.close(sync)
        raise
    if not attach:
        os.close(sync)
        sync = -1
    return Started(replace(container, pid=pid), pid, sync)


def release(store: StateStore, container: Container, timeout: float) -> None:
    """Read PID 1's byte from the exec fifo: its open(2) for writing returns once this
    reader exists, and it execs right after writing. An O_NONBLOCK reader never blocks,
    and PID 1's pidfd says when it died instead."""
    assert container.pid is not None
    fifo = os.path.join(store.container_dir(container.id), EXEC_FIFO)
    try:
        pidfd = os.pidfd_open(container.pid)
    except ProcessLookupError:
        raise OciError(f"container {container.name}: its process is gone") from None
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready = select.select([fd, pidfd], [], [], left)[0]
            if fd in ready and os.read(fd, 1):
                break
            if pidfd in ready:
                raise OciError(f"container {container.name}: its process exited before start")
        else:
            why = f"no answer on its exec fifo in {timeout:g} s"
            raise OciError(f"container {container.name}: {why}")
    finally:
        os.close(fd)
        os.close(pidfd)
    os.unlink(fifo)


def start(container_id: str, store: StateStore, timeout: float = START_TIMEOUT) -> None:
    """created -> running: the user's command runs."""
    container = find(store, container_id)
    with store.locked(container.id) as fresh:
        require(fresh, "start", ("created",))
        release(store, fresh, timeout)
        store.update(fresh.id, status="running", started=now())


def state(container_id: str, store: StateStore) -> Container:
    """The container as the state JSON shows it (runtime.oci.state.state_json)."""
    return find(store, container_id)


def kill(container_id: str, store: StateStore, sig: int) -> None:
    """``sig`` to PID 1 of a created or running container."""
    container = find(store, container_id)
    require(container, "kill", ("created", "running"))
    send_signal(container, sig)


def delete(
    container_id: str, store: StateStore, *, force: bool = False, timeout: float = STOP_TIMEOUT
) -> None:
    """Undo create: a created container is killed first, a running one only with
    ``force``; then its cgroup (cgroup.kill, wait for populated 0, rmdir) and its state
    directory are removed, under the container's lock. The shim, which may still be
    recording the exit, finds the container gone and records nothing."""
    container = find(store, container_id)
    with store.locked(container.id) as fresh:
        status = oci_status(fresh)
        if status in ("creating", "running") and not force:
            raise OciStateError(
                f"cannot delete container {fresh.name}: it is {status}; delete needs it "
                "stopped or created (or --force)"
            )
        parent = fresh.cgroup.rpartition("/")[0] or DEFAULT_PARENT
        ContainerCgroups(parent=parent).remove(fresh.cgroup, timeout)
        store.remove(fresh.id)
