"""Who a cgroup belongs to: corral containers from the runtime's state, and systemd units,
docker, podman and kubernetes cgroups from their path conventions (sources cited in
tests/fixtures/naming/README.md).

corral's runtime state (the contract the runtime issue implements). For every container the
runtime writes, atomically (a temporary file renamed into place),

    <state_dir>/containers/<id>/state.json    (state_dir defaults to /run/corral)

a JSON object with at least

    {"id": "<id, the directory's name>", "name": "<container name>",
     "labels": {"<key>": "<value>", ...}, "cgroup": "corral/<id>"}

``cgroup`` is the container's cgroup relative to the cgroup2 root (by default under corral's
parent ``corral/``); other keys (status, pid, bundle, created, ...) are the runtime's own and
ignored here. A missing state directory means "no containers"; an unreadable or malformed
state file is skipped and counted in ``Namer.invalid_states``. Only the container's own
cgroup is named after it; cgroups the container creates below it keep their paths.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from monitor.snapshot import CgroupName
from runtime.cgroupfs import InvalidPath, normalize

DEFAULT_STATE_DIR = "/run/corral"

_ID = r"[0-9a-f]{64}"
# runc's systemd driver names a container's unit "<prefix>-<id>.scope" (getUnitName): docker,
# libpod (podman), cri-containerd and crio (kubelet's SystemdPathPrefixOfRuntime).
_SCOPE = re.compile(rf"(?P<prefix>docker|libpod|cri-containerd|crio)-(?P<id>{_ID})\.scope")
# kubelet's pod cgroup: "pod" + UID under kubepods[/burstable|/besteffort]; the systemd
# driver escapes each "-" of the UID to "_" (systemd reads "-" as a level in a slice name).
_K8S_POD_SLICE = re.compile(
    r"(?:.+-)?kubepods(?:-burstable|-besteffort)?-pod(?P<uid>[0-9a-f_]+)\.slice"
)
_K8S_POD_DIR = re.compile(r"pod(?P<uid>[0-9a-f-]+)")
_K8S_CONTAINER_DIR = re.compile(rf"(?:crio-)?(?P<id>{_ID})")
_K8S_QOS = ("burstable", "besteffort")
# podman: pods are "<parent slice>-libpod_pod_<id>.slice" (systemd) or "libpod_parent/<id>"
# (cgroupfs); containers "libpod-<id>.scope" or "libpod_parent/[<pod>/]libpod-<id>".
_PODMAN_POD_SLICE = re.compile(rf"(?:.+-)?libpod_pod_(?P<id>{_ID})\.slice")
_LIBPOD_DIR = re.compile(rf"libpod-(?P<id>{_ID})")
_HEX_ID = re.compile(_ID)
_UNIT_KINDS = {".service": "service", ".scope": "scope", ".slice": "slice"}


def conventional_name(path: str) -> CgroupName:
    """The name a cgroup's path gives it by the conventions above; kind "cgroup" otherwise."""
    parts = path.split("/") if path else []
    return (
        _kubernetes(path, parts)
        or _docker(path, parts)
        or _podman(path, parts)
        or _systemd(path, parts)
        or CgroupName(path, "cgroup", path or "/")
    )


def _kubernetes(path: str, parts: list[str]) -> CgroupName | None:
    if not any("kubepods" in p for p in parts):
        return None
    uid = _pod_uid(parts, len(parts) - 1)
    if uid is not None:
        return CgroupName(path, "kubernetes", f"pod-{uid}", uid)
    parent_uid = _pod_uid(parts, len(parts) - 2)
    if parent_uid is not None:
        scope = _SCOPE.fullmatch(parts[-1])
        plain = _K8S_CONTAINER_DIR.fullmatch(parts[-1])
        match = scope if scope and scope["prefix"] != "libpod" else plain
        if match:
            cid = match["id"]
            return CgroupName(path, "kubernetes", f"pod-{parent_uid}/{cid[:12]}", cid)
    if parts[0] == "kubepods" and (len(parts) == 1 or (len(parts) == 2 and parts[1] in _K8S_QOS)):
        return CgroupName(path, "kubernetes", path)  # the cgroupfs driver's QoS levels
    return None


def _pod_uid(parts: list[str], i: int) -> str | None:
    """The pod UID if parts[i] is a kubelet pod cgroup (either driver), else None."""
    if i < 0:
        return None
    slice_ = _K8S_POD_SLICE.fullmatch(parts[i])
    if slice_:
        return slice_["uid"].replace("_", "-")
    plain = _K8S_POD_DIR.fullmatch(parts[i])
    parent = parts[i - 1] if i > 0 else ""
    under_kubepods = parent == "kubepods" or (
        parent in _K8S_QOS and i > 1 and parts[i - 2] == "kubepods"
    )
    return plain["uid"] if plain and under_kubepods else None


def _docker(path: str, parts: list[str]) -> CgroupName | None:
    last = parts[-1] if parts else ""
    scope = _SCOPE.fullmatch(last)
    if scope and scope["prefix"] == "docker":
        cid = scope["id"]
    elif len(parts) >= 2 and parts[-2] == "docker" and _HEX_ID.fullmatch(last):
        cid = last  # the cgroupfs driver: /docker/<id>
    else:
        return None
    return CgroupName(path, "docker", cid[:12], cid)


def _podman(path: str, parts: list[str]) -> CgroupName | None:
    last = parts[-1] if parts else ""
    scope = _SCOPE.fullmatch(last)
    in_parent = "libpod_parent" in parts[:-1]
    container = scope if scope and scope["prefix"] == "libpod" else None
    if container is None and in_parent:
        container = _LIBPOD_DIR.fullmatch(last)
    if container:
        cid = container["id"]
        return CgroupName(path, "podman", cid[:12], cid)
    pod = _PODMAN_POD_SLICE.fullmatch(last)
    pod_id = pod["id"] if pod else None
    if pod_id is None and len(parts) >= 2 and parts[-2] == "libpod_parent":
        pod_id = last if _HEX_ID.fullmatch(last) else None
    if pod_id is not None:
        return CgroupName(path, "podman", f"pod-{pod_id[:12]}", pod_id)
    return None


def _systemd(path: str, parts: list[str]) -> CgroupName | None:
    last = parts[-1] if parts else ""
    for suffix, kind in _UNIT_KINDS.items():
        if last.endswith(suffix) and len(last) > len(suffix):
            return CgroupName(path, kind, last)
    return None


@dataclass(frozen=True, slots=True)
class _StateKey:
    """What identifies one version of the state directory's content."""

    files: tuple[tuple[str, int, int, int], ...]  # (id, inode, mtime_ns, size)


class Namer:
    """Names cgroups; caches a name per path until the runtime's state changes."""

    def __init__(self, state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> None:
        self.state_dir = os.fspath(state_dir)
        self._containers_dir = os.path.join(self.state_dir, "containers")
        self._key: _StateKey | None = None
        self._containers: dict[str, CgroupName] = {}
        self._cache: dict[str, CgroupName] = {}
        self.invalid_states = 0

    def name(self, path: str) -> CgroupName:
        return self.names([path])[path]

    def names(self, paths: Iterable[str]) -> dict[str, CgroupName]:
        """A name for each path. The cache keeps only these paths (churn cannot grow it)."""
        self._refresh()
        cache, out = self._cache, {}
        for path in paths:
            name = cache.get(path)
            if name is None:
                name = self._containers.get(path) or conventional_name(path)
            out[path] = name
        self._cache = out
        return out

    def _refresh(self) -> None:
        """Re-read the state files when any was added, removed or rewritten."""
        key = self._state_key()
        if key == self._key:
            return
        self._key = key
        self._cache = {}
        self._containers = {}
        self.invalid_states = 0
        for cid, *_ in key.files:
            name = self._load(cid)
            if name is None:
                self.invalid_states += 1
            else:
                self._containers[name.path] = name

    def _state_key(self) -> _StateKey:
        files = []
        try:
            with os.scandir(self._containers_dir) as it:
                ids = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            return _StateKey(())  # no state directory: no corral containers
        for cid in ids:
            try:
                st = os.stat(os.path.join(self._containers_dir, cid, "state.json"))
            except OSError:
                continue  # a container directory being created or removed
            files.append((cid, st.st_ino, st.st_mtime_ns, st.st_size))
        return _StateKey(tuple(files))

    def _load(self, cid: str) -> CgroupName | None:
        """The container of one state file, or None when it is unreadable or malformed."""
        try:
            with open(os.path.join(self._containers_dir, cid, "state.json"), "rb") as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        return parse_state(state, cid)


def parse_state(state: object, cid: str) -> CgroupName | None:
    """The CgroupName a state.json object gives its container (see the module docstring)."""
    if not isinstance(state, Mapping):
        return None
    name, cgroup, labels = state.get("name"), state.get("cgroup"), state.get("labels", {})
    if state.get("id") != cid or not isinstance(name, str) or not isinstance(cgroup, str):
        return None
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        return None
    try:
        path = normalize(cgroup)
    except InvalidPath:
        return None
    return CgroupName(path, "container", name, cid, dict(labels))
