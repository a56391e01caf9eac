"""StateStore: the containers' state under /run/corral, ids, names and locking.

Layout (``root`` defaults to /run/corral; the CLI's --state-dir and CORRAL_STATE_DIR):

    <root>/lock                          flock(2): serialises name reservation and removal
    <root>/containers/<id>/config.json   the ContainerSpec (container/config.py), mode 0600 (env)
    <root>/containers/<id>/state.json    status, pids, exit, times; monitor/naming.py's contract
    <root>/containers/<id>/log.jsonl     the log the shim writes (runtime.container.logs)
    <root>/containers/<id>/lock          flock(2): one mutation of this container at a time
    <root>/tmp/                          containers being created or removed

A container directory appears and disappears with one rename(2) into or out of
``containers/``, so a reader (``corral ps``, monitor.naming.Namer) sees a container whole or
not at all; state.json is replaced by writing a temporary file in the same directory,
fsync(2), rename(2) and fsync of the directory. Lock order: a container's lock, then the
store's; creation takes only the store's.

Ids are 64 hex digits from os.urandom (shown as 12); a reference is a full id, a name or a
unique id prefix, in that order, as docker resolves them. ``refresh`` reconciles a container
whose shim is gone (crashed, killed, the host rebooted with a persistent state dir): it is
marked stopped with exit code None and error "shim died", so ``ps`` tells the truth.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from runtime.container.config import spec_from_dict, spec_to_dict
from runtime.container.defaults import DEFAULT_PARENT
from runtime.container.defaults import STATE_DIR as STATE_DIR
from runtime.container.logs import now

# The lean record writers (the shim's exit child uses them without this module's imports);
# write_atomic and proc_start_time are this module's API too.
from runtime.container.record import fsync_dir, proc_start_time, write_atomic
from runtime.container.spec import ContainerSpec, generate_name, renamed

STATUSES = ("created", "running", "stopped")
KINDS = ("corral", "oci")
SHIM_DIED = "shim died"
_ID = re.compile(r"[0-9a-f]{64}")
_DIR_MODE, _CONFIG_MODE, _STATE_MODE = 0o711, 0o600, 0o644

# Container locks held, by (pid, lock path): update() and remove() inside locked() must not
# flock the same file again through a new open file description (that would deadlock).
_held: dict[tuple[int, str | None], int] = {}


class ContainerNotFound(LookupError):
    """No container has this id, name or id prefix."""


class AmbiguousReference(ContainerNotFound):
    """An id prefix shared by several containers."""


class NameInUse(ValueError):
    """Another container already has this name."""


@dataclass(frozen=True)
class Container:
    """One container: its spec (config.json) and state (state.json)."""

    id: str
    name: str
    spec: ContainerSpec
    cgroup: str  # relative to the cgroup2 root
    status: str  # created | running | stopped
    created: str  # RFC 3339 UTC
    pid: int | None = None  # the container's PID 1 as the host sees it
    shim_pid: int | None = None
    shim_start_time: int | None = None  # /proc/PID/stat starttime of the shim
    exit_code: int | None = None
    oom_killed: bool = False
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    kind: str = "corral"  # "oci": made by `corral oci create` or `corral run --bundle`
    bundle: str | None = None  # the OCI bundle's absolute path

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def state_dict(self) -> dict[str, Any]:
        """state.json: monitor.naming's keys (id, name, labels, cgroup) and the runtime's."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spec"}
        d["labels"] = self.spec.label_map
        return d


# The state.json keys update() may change, with the types they hold.
MUTABLE: dict[str, tuple[type, ...]] = {
    "cgroup": (str,),
    "status": (str,),
    "pid": (int, type(None)),
    "shim_pid": (int, type(None)),
    "shim_start_time": (int, type(None)),
    "exit_code": (int, type(None)),
    "oom_killed": (bool,),
    "started": (str, type(None)),
    "finished": (str, type(None)),
    "error": (str, type(None)),
}


def shim_alive(container: Container) -> bool:
    """Whether the shim recorded in the state is still that process."""
    if container.shim_pid is None:
        return False
    start = proc_start_time(container.shim_pid)
    if start is None:
        return False
    return container.shim_start_time is None or start == container.shim_start_time


@contextlib.contextmanager
def _flock(path: str, key: str | None = None) -> Iterator[None]:
    """An exclusive flock(2) on ``path`` (made when it is the store's lock, ``key`` None;
    a container's lock exists from its creation on); reentrant in this process for ``key``.

    A flock belongs to the open file description, which a forked child shares: the lock is
    released with LOCK_UN (not just close), or a child still holding the inherited
    descriptor would keep it; and reentry is keyed by pid, so such a child locks anew."""
    held = (os.getpid(), key)
    if key is not None and held in _held:
        _held[held] += 1
        try:
            yield
        finally:
            _held[held] -= 1
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if key is None else 0), 0o600)
    except FileNotFoundError:
        if key is None:
            raise
        container_id = os.path.basename(os.path.dirname(path))
        raise ContainerNotFound(f"no such container: {container_id}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held[held] = 1
        try:
            yield
        finally:
            del _held[held]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class StateStore:
    """The containers under one state directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] = STATE_DIR) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.containers_dir = os.path.join(self.root, "containers")
        self._tmp = os.path.join(self.root, "tmp")
        self.skipped: list[str] = []  # ids whose files list() could not read

    def container_dir(self, container_id: str) -> str:
        return os.path.join(self.containers_dir, container_id)

    def log_path(self, container_id: str) -> str:
        return os.path.join(self.container_dir(container_id), "log.jsonl")

    def _store_lock(self) -> contextlib.AbstractContextManager[None]:
        return _flock(os.path.join(self.root, "lock"))

    def _container_lock(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        lock = os.path.join(self.container_dir(container_id), "lock")
        return _flock(lock, key=lock)

    # -- creating ------------------------------------------------------------------------------

    def create(
        self,
        spec: ContainerSpec,
        *,
        cgroup: str | None = None,
        kind: str = "corral",
        bundle: str | None = None,
    ) -> Container:
        """A new container in status "created": its name reserved under the store's lock (a
        generated name that is taken is replaced; a given one raises NameInUse), a new id,
        config.json and state.json. ``cgroup`` defaults to "corral/<name>"; ``kind`` "oci"
        with its ``bundle`` for an OCI container (its OCI id is the name)."""
        if kind not in KINDS:
            raise ValueError(f"container kind {kind!r}: allowed {', '.join(KINDS)}")
        for path in (self.root, self.containers_dir, self._tmp):
            os.makedirs(path, mode=_DIR_MODE, exist_ok=True)
        with self._store_lock():
            self._clear_tmp()  # leftovers of a create or remove that crashed under this lock
            taken = self._names()
            if spec.name in taken:
                spec = self._rename(spec, taken)
            container_id = os.urandom(32).hex()
            container = Container(
                id=container_id,
                name=spec.name,
                spec=spec,
                cgroup=cgroup if cgroup is not None else f"{DEFAULT_PARENT}/{spec.name}",
                status="created",
                created=now(),
                kind=kind,
                bundle=bundle,
            )
            staging = os.path.join(self._tmp, container_id)
            os.mkdir(staging, _DIR_MODE)
            config = json.dumps(spec_to_dict(spec), indent=2).encode()
            write_atomic(os.path.join(staging, "config.json"), config, _CONFIG_MODE)
            write_atomic(os.path.join(staging, "state.json"), _encode(container), _STATE_MODE)
            os.close(os.open(os.path.join(staging, "lock"), os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.rename(staging, self.container_dir(container_id))
            fsync_dir(self.containers_dir)
            return container

    def _rename(self, spec: ContainerSpec, taken: dict[str, str]) -> ContainerSpec:
        if spec.generated_name:
            for _ in range(1000):
                name = generate_name()
                if name not in taken:
                    return renamed(spec, name)
        raise NameInUse(
            f"name {spec.name!r} is already in use by container {taken[spec.name][:12]}: "
            f"remove it (corral rm {spec.name}) or choose another --name"
        )

    def _clear_tmp(self) -> None:
        with contextlib.suppress(FileNotFoundError), os.scandir(self._tmp) as entries:
            for entry in entries:
                shutil.rmtree(entry.path, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------

    def _ids(self) -> list[str]:
        try:
            with os.scandir(self.containers_dir) as entries:
                return sorted(e.name for e in entries if _ID.fullmatch(e.name))
        except FileNotFoundError:
            return []

    def _read_json(self, container_id: str, name: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.container_dir(container_id), name), "rb") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ContainerNotFound(f"no such container: {container_id}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{name} of container {container_id} is not a JSON object")
        return d

    def _names(self) -> dict[str, str]:
        """name -> id of every container whose state.json is readable."""
        names = {}
        for container_id in self._ids():
            with contextlib.suppress(ContainerNotFound, ValueError):
                name = self._read_json(container_id, "state.json").get("name")
                if isinstance(name, str):
                    names[name] = container_id
        return names

    def load(self, container_id: str) -> Container:
        """The container with this full id; ContainerNotFound, or ValueError when its files
        are malformed."""
        spec = spec_from_dict(self._read_json(container_id, "config.json"))
        state = self._read_json(container_id, "state.json")
        return _decode(container_id, spec, state)

    def by_name(self, name: str) -> Container:
        """The container named exactly ``name`` (an OCI id), never an id or id prefix."""
        names = self._names()
        if name not in names:
            raise ContainerNotFound(f"no such container: {name}")
        return self.load(names[name])

    def get(self, ref: str) -> Container:
        """By full id, then by name, then by unique id prefix."""
        if _ID.fullmatch(ref) and os.path.isdir(self.container_dir(ref)):
            return self.load(ref)
        names = self._names()
        if ref in names:
            return self.load(names[ref])
        matches = [i for i in self._ids() if ref and i.startswith(ref)]
        if len(matches) > 1:
            raise AmbiguousReference(
                f"container id prefix {ref!r} matches {len(matches)} containers: "
                + ", ".join(m[:12] for m in matches)
            )
        if not matches:
            raise ContainerNotFound(f"no such container: {ref}")
        return self.load(matches[0])

    def list(self) -> list[Container]:
        """Every readable container, oldest first; unreadable ids go to ``skipped``."""
        found, self.skipped = [], []
        for container_id in self._ids():
            try:
                found.append(self.load(container_id))
            except ContainerNotFound:
                continue  # removed while listing
            except ValueError:
                self.skipped.append(container_id)
        return sorted(found, key=lambda c: (c.created, c.id))

    # -- changing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, ref: str) -> Iterator[Container]:
        """The container's lock held; yields its state as read under the lock."""
        container_id = self.get(ref).id
        with self._container_lock(container_id):
            yield self.load(container_id)  # ContainerNotFound if removed while we waited

    def update(self, container_id: str, **changes: Any) -> Container:
        """Change state.json fields (keys of MUTABLE), atomically, under the container's
        lock (re-entered when the caller holds it through ``locked``)."""
        for key, value in changes.items():
            kinds = MUTABLE.get(key, ())
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"state field {key}={value!r}: allowed {_allowed()}")
        if changes.get("status", "created") not in STATUSES:
            raise ValueError(f"status {changes['status']!r}: allowed {', '.join(STATUSES)}")
        with self._container_lock(container_id):
            container = replace(self.load(container_id), **changes)
            path = os.path.join(self.container_dir(container_id), "state.json")
            write_atomic(path, _encode(container), _STATE_MODE)
            return container

    def update_spec(self, container_id: str, spec: ContainerSpec) -> Container:
        """Replace config.json (``corral update`` records the limits now in force there),
        atomically, under the container's lock. The name cannot change this way."""
        with self._container_lock(container_id):
            container = self.load(container_id)
            if spec.name != container.spec.name:
                raise ValueError(f"update_spec: name {spec.name!r} is not {container.name!r}")
            path = os.path.join(self.container_dir(container_id), "config.json")
            write_atomic(path, json.dumps(spec_to_dict(spec), indent=2).encode(), _CONFIG_MODE)
            return replace(container, spec=spec)

    def remove(self, container_id: str) -> None:
        """Remove the container's directory (its state, config and log) in one rename."""
        with self._container_lock(container_id), self._store_lock():
            graveyard = os.path.join(self._tmp, f"removing-{container_id}")
            try:
                os.rename(self.container_dir(container_id), graveyard)
            except FileNotFoundError:
                raise ContainerNotFound(f"no such container: {container_id}") from None
            fsync_dir(self.containers_dir)
            shutil.rmtree(graveyard, ignore_errors=True)

    def refresh(self, container: Container) -> Container:
        """``container`` reconciled with the host: created or running with a shim that is
        gone (or whose pid now belongs to another process) becomes stopped, exit code None,
        error "shim died". Locks only when the shim looks dead."""
        if container.status == "stopped" or container.shim_pid is None or shim_alive(container):
            return container
        with self.locked(container.id) as fresh:
            if fresh.status == "stopped" or fresh.shim_pid is None or shim_alive(fresh):
                return fresh
            return self.update(
                fresh.id, status="stopped", pid=None, exit_code=None, error=SHIM_DIED,
                finished=now(),
            )  # fmt: skip


def _allowed() -> str:
    return ", ".join(f"{k} ({'|'.join(t.__name__ for t in v)})" for k, v in MUTABLE.items())


def _encode(container: Container) -> bytes:
    return json.dumps(container.state_dict(), indent=2).encode()


def _decode(container_id: str, spec: ContainerSpec, state: dict[str, Any]) -> Container:
    if state.get("id") != container_id or not isinstance(state.get("name"), str):
        raise ValueError(f"state.json of container {container_id} has the wrong id or no name")
    values: dict[str, Any] = {"created": state.get("created")}
    for key, kinds in MUTABLE.items():
        value = state.get(key, None if type(None) in kinds else ...)
        if not isinstance(value, kinds) or (key == "status" and value not in STATUSES):
            raise ValueError(f"state.json of container {container_id}: {key}={value!r}")
        values[key] = value
    if not isinstance(values["created"], str):
        raise ValueError(f"state.json of container {container_id}: no created time")
    # Absent in state written before OCI containers existed: a `corral run` container.
    kind, bundle = state.get("kind", "corral"), state.get("bundle")
    if kind not in KINDS or not isinstance(bundle, (str, type(None))):
        raise ValueError(f"state.json of container {container_id}: kind={kind!r} bundle={bundle!r}")
    return Container(
        id=container_id, name=state["name"], spec=spec, kind=kind, bundle=bundle, **values
    )
