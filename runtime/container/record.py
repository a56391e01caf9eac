"""The shim's records without the runtime's imports: state.json changed, a container's
directory and cgroup removed, with only os, fcntl and json.

The shim's starter records "running" and the shim's exit child records the exit (or
removes the container for ``--rm``) with these functions, in StateStore's format and under
its locks (runtime.container.state: the container's lock, then the store's; state.json
replaced by a temporary file, fsync(2), rename(2) and fsync of the directory; a directory
removed by one rename(2) out of ``containers/``). Importing StateStore, ContainerCgroups
and runtime.network costs a container start tens of milliseconds (the spec, config,
network and cgroupfs modules); these need none of it, and json is imported only to change
state.json: the --rm path runs with the modules the shim already has. What they cannot do
alone, they leave to the full path: ``finish_exit`` returns False when the container had
bridge networking or its cgroup does not go with one rmdir(2) (processes left in it, or
child cgroups), and the caller runs runtime.container.lifecycle's record_exit or
remove_container instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

STATE_MODE = 0o644  # runtime.container.state._STATE_MODE


def format_time(ns: int) -> str:
    """RFC 3339 UTC with nanoseconds: 2024-05-01T12:00:00.123456789Z (the state's and the
    logs' times; runtime.container.logs uses it too)."""
    seconds, nanos = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def rfc3339_now() -> str:
    """The current time as ``format_time`` writes it."""
    return format_time(time.time_ns())


def proc_start_time(pid: int) -> int | None:
    """Field 22 (starttime, clock ticks after boot) of /proc/PID/stat; None when the process
    is gone or a zombie (the comm in parentheses may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    after = text[text.rfind(b")") + 2 :].split()
    if after[0] in (b"Z", b"X"):
        return None
    return int(after[19])


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` whole: a temporary file beside it, fsync, rename(2), fsync the dir."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)


def _lock(path: str, create: bool) -> int | None:
    """An fd holding an exclusive flock(2) on ``path``; None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _unlock(fd: int) -> None:
    """LOCK_UN, not just close: a forked child sharing the description would keep it."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def update_state(state_dir: str, container_id: str, **changes: object) -> bool:
    """Set state.json fields under the container's lock (StateStore.update's write, for
    values the caller knows to be of MUTABLE's types); False when the container is gone."""
    import json  # here: --rm (remove_state) needs none of json's imports (re, enum, ...)

    directory = os.path.join(state_dir, "containers", container_id)
    fd = _lock(os.path.join(directory, "lock"), create=False)
    if fd is None:
        return False
    try:
        path = os.path.join(directory, "state.json")
        try:  # removed while this waited for the lock: the directory was renamed away
            with open(path, "rb") as f:
                state = json.load(f)
        except FileNotFoundError:
            return False
        if not isinstance(state, dict) or state.get("id") != container_id:
            raise ValueError(f"{path}: not the state of container {container_id}")
        state.update(changes)
        write_atomic(path, json.dumps(state, indent=2).encode(), STATE_MODE)
        return True
    finally:
        _unlock(fd)


def _rmtree(path: str) -> None:
    """Everything under ``path`` and ``path`` (a container directory: a few files)."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        os.rmdir(path)
    except FileNotFoundError:
        pass


def remove_state(state_dir: str, container_id: str) -> bool:
    """StateStore.remove: the container's directory renamed into tmp/ (one rename(2): a
    reader sees it whole or not at all), then deleted; False when it was gone."""
    containers = os.path.join(state_dir, "containers")
    lock = _lock(os.path.join(containers, container_id, "lock"), create=False)
    if lock is None:
        return False
    try:
        store = _lock(os.path.join(state_dir, "lock"), create=True)
        assert store is not None
        try:
            graveyard = os.path.join(state_dir, "tmp", f"removing-{container_id}")
            try:
                os.rename(os.path.join(containers, container_id), graveyard)
            except FileNotFoundError:
                return False
            fsync_dir(containers)
            _rmtree(graveyard)
            return True
        finally:
            _unlock(store)
    finally:
        _unlock(lock)


def oom_killed(cgroup_dir: str) -> bool:
    """memory.events ``oom_kill`` > 0 (the subtree's count); False without the file."""
    try:
        with open(os.path.join(cgroup_dir, "memory.events"), "rb") as f:
            for line in f:
                key, _, value = line.partition(b" ")
                if key == b"oom_kill":
                    return int(value) > 0
    except FileNotFoundError:
        pass
    return False


def remove_cgroup(cgroup_dir: str) -> bool:
    """rmdir(2) of an empty cgroup without children; True when it is gone. EBUSY (a
    process or a child cgroup left) is False: ContainerCgroups.remove kills and waits."""
    try:
        os.rmdir(cgroup_dir)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENODEV):
            return True
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def has_network(state_dir: str, container_id: str) -> bool:
    """Whether runtime.network.detach has anything to do (its own fast-path test: a lease
    file in the state directory, or the container's host veth "crl" + 12 hex digits)."""
    if os.path.exists(os.path.join(state_dir, "network", "leases.json")):
        return True
    import _socket  # the C module alone: socket.py would add enum and selectors

    try:
        _socket.if_nametoindex("crl" + container_id[:12])
    except OSError:
        return False
    return True


def finish_exit(state_dir: str, container_id: str, cgroup_dir: str, code: int, rm: bool) -> bool:
    """After PID 1's exit: ``rm`` removes the cgroup and the state directory, else the exit
    status, OOM kill and finish time are recorded. False (nothing changed) when the full
    path is needed: bridge networking, or a cgroup that needs killing or has children."""
    if has_network(state_dir, container_id):
        return False
    if rm:
        if not remove_cgroup(cgroup_dir):
            return False
        remove_state(state_dir, container_id)
        return True
    # `corral oci delete` may have removed the cgroup and the state already: nothing to do.
    oom = oom_killed(cgroup_dir)
    fields = {"status": "stopped", "exit_code": code, "oom_killed": oom}
    update_state(state_dir, container_id, **fields, finished=rfc3339_now())
    return True
