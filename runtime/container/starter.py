"""The shim's starter: a child forked by the shim (runtime/container/shim.py ``start``) that
imports the container setup once, forks the setup process, waits for the execve and
records "running".

It imports what the container's processes need (runtime.container.process, and
runtime.oci.init_process for an OCI container) and the lean state records
(runtime.container.record), never StateStore, ContainerCgroups or the network modules:
those imports cost a start tens of milliseconds. Bridge networking imports runtime.network
only for a container that asks for it.
"""

from __future__ import annotations

import os
from dataclasses import replace

from runtime import syscalls
from runtime.container import record
from runtime.container.process import (
    EXIT_FAILED,
    ProcessConfig,
    SetupError,
    report_failure,
    send,
    setup_main,
    wait_for_exec,
)


def starter_main(config: bytes, answer: int, state_dir: str, container_id: str, shim: int) -> None:
    """Fork the setup process (process.setup_main), wait for the execve
    (process.wait_for_exec), record "running", and answer "started PID" or "error CODE
    MESSAGE" on ``answer``; never returns. An OCI container (``oci`` set) stops before
    execve: recorded with its pid, "created PID". One process imports the runtime for both,
    so that a container start pays for it once."""
    try:
        parsed = ProcessConfig.from_json(config)
        report_r, report_w = os.pipe()
        control_r, control_w = os.pipe()
        oci = parsed.oci is not None
        if oci:  # imported before the fork: the setup process and this one both need it
            from runtime.oci.init_process import setup_main as oci_setup_main
        setup, parsed = fork_setup(parsed)
        if setup == 0:
            os.close(report_r)
            os.close(control_w)
            os.close(answer)
            (oci_setup_main if oci else setup_main)(parsed, report_w, control_r)
        os.close(report_w)
        os.close(control_r)
        hook = None  # [F3] bridge networking, attached before the command's first instruction
        if parsed.network == "bridge":
            import functools

            from runtime import network

            hook = functools.partial(network.attach_from_state, state_dir, container_id)
        pid = wait_for_exec(setup, report_r, control_w, ready=oci, before_go=hook)
        if oci:  # PID 1 waits on the exec fifo: `corral oci start` releases it
            record_created(state_dir, container_id, pid, shim)
            send(answer, f"created {pid}")
        else:
            record_started(state_dir, container_id, pid, shim)
            send(answer, f"started {pid}")
    except SetupError as e:
        report_failure(answer, e.code, str(e))
    except Exception as e:
        report_failure(answer, EXIT_FAILED, f"starting the container: {e}")
    os._exit(0)


def fork_setup(config: ProcessConfig) -> tuple[int, ProcessConfig]:
    """Fork the setup process straight into the container's cgroup (clone3
    CLONE_INTO_CGROUP: joining it later through cgroup.procs costs an RCU grace period,
    ~10 ms of every start); plain fork(2) where the kernel or the cgroup refuses, and the
    setup process joins through cgroup.procs, which reports the error, if any."""
    try:
        fd = os.open(config.cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return os.fork(), config
    try:
        pid = syscalls.fork_into_cgroup(fd)
    except OSError:
        return os.fork(), config
    finally:
        os.close(fd)  # the child's copy too (it is its first act)
    return pid, replace(config, born_in_cgroup=True)


def _record(state_dir: str, container_id: str, **fields: object) -> None:
    if not record.update_state(state_dir, container_id, **fields):
        raise LookupError(f"no such container: {container_id}")


def record_started(state_dir: str, container_id: str, pid: int, shim_pid: int) -> None:
    """Status "running" with PID 1, the shim and its start time, and the start time."""
    _record(
        state_dir, container_id, status="running", pid=pid, shim_pid=shim_pid,
        shim_start_time=record.proc_start_time(shim_pid), started=record.rfc3339_now(),
    )  # fmt: skip


def record_created(state_dir: str, container_id: str, pid: int, shim_pid: int) -> None:
    """An OCI container set up and waiting on its exec fifo: still "created", now with
    PID 1 (runtime.oci.state tells "creating" from "created" by the pid)."""
    _record(
        state_dir, container_id, pid=pid, shim_pid=shim_pid,
        shim_start_time=record.proc_start_time(shim_pid),
    )  # fmt: skip
