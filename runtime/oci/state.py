"""The OCI state machine and state JSON (runtime-spec runtime.md "State", "Lifecycle").

An OCI container is a StateStore container (runtime.container.state) of kind "oci" whose
name is its OCI id, so `corral ps` lists it and monitor.naming names its cgroup. Its OCI
status follows from the store's:

    store "created", no pid yet   -> creating  (create is setting it up)
    store "created", pid recorded -> created   (PID 1 waits on the exec fifo)
    store "running"               -> running   (`start` read the fifo)
    store "stopped"               -> stopped   (the shim recorded the exit)

Each verb is allowed only in some statuses (``require``); any other gives OciStateError
naming the container, its status and what the verb needs, and changes nothing.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.container.state import Container

OCI_VERSION = "1.0.2"  # the runtime-spec version this state JSON follows
EXEC_FIFO = "exec.fifo"  # in the container's state directory, as runc's
ID_FORM = "[A-Za-z0-9][A-Za-z0-9_.-]* up to 128 characters (corral's container names)"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
STATUSES = ("creating", "created", "running", "stopped")


class OciError(Exception):
    """An OCI verb failed; ``code`` is the CLI's exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class OciStateError(OciError):
    """A verb asked of a container in a status that does not allow it."""


def check_id(container_id: str) -> str:
    """The runtime-spec only says ids are unique: corral takes its names' form, which is
    also a valid cgroup and file name (runc allows [A-Za-z0-9_+.-])."""
    if not _ID.fullmatch(container_id):
        raise OciError(f"container id {container_id!r}: allowed {ID_FORM}")
    return container_id


def oci_status(container: Container) -> str:
    """The runtime-spec status of a store container (module docstring)."""
    if container.status == "created":
        return "creating" if container.pid is None else "created"
    return container.status


def require(container: Container, verb: str, allowed: tuple[str, ...]) -> str:
    """The container's status, or OciStateError when ``verb`` does not allow it."""
    status = oci_status(container)
    if status not in allowed:
        raise OciStateError(
            f"cannot {verb} container {container.name}: it is {status}; "
            f"{verb} needs it {' or '.join(allowed)}"
        )
    return status


def state_json(container: Container) -> dict[str, Any]:
    """runtime-spec state: ociVersion, id, status, pid (created or running only, as the
    spec requires; runc prints 0 otherwise), bundle, annotations."""
    status = oci_status(container)
    pid = container.pid if status in ("created", "running") and container.pid else 0
    return {
        "ociVersion": OCI_VERSION,
        "id": container.name,
        "status": status,
        "pid": pid,
        "bundle": container.bundle or "",
        "annotations": container.spec.label_map,
    }
