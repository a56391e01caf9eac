"""Cgroup naming: the path conventions of systemd, docker, podman and the kubelet (table in
tests/fixtures/naming/paths.json, sources in its README) and corral's runtime state files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from monitor.naming import Namer, conventional_name, parse_state
from monitor.snapshot import CgroupName

NAMING = Path(__file__).resolve().parent.parent / "fixtures" / "naming"
CASES: list[dict[str, str]] = json.loads((NAMING / "paths.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["path"] or "/" for c in CASES])
def test_conventional_names(case: dict[str, str]) -> None:
    name = conventional_name(case["path"])
    assert name == CgroupName(case["path"], case["kind"], case["name"], case["id"])


def test_the_table_covers_every_kind_and_source() -> None:
    kinds = {c["kind"] for c in CASES}
    assert kinds == {"cgroup", "service", "scope", "slice", "docker", "podman", "kubernetes"}
    sources = {c["source"] for c in CASES}
    assert {"systemd", "docker", "podman", "kubelet", "containerd", "cri-o"} <= sources


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A copy of the fixture state directory (tests change it)."""
    target = tmp_path / "run-corral"
    shutil.copytree(NAMING / "state", target)
    return target


def test_corral_containers_are_named_from_their_state(state_dir: Path) -> None:
    namer = Namer(state_dir)
    names = namer.names(["corral/web", "corral/batch", "corral/web/sub", "corral", ""])
    assert names["corral/web"] == CgroupName(
        "corral/web", "container", "web", "web-1a2b3c", {"app": "shop", "tier": "front"}
    )
    assert names["corral/batch"] == CgroupName("corral/batch", "container", "batch", "batch-9f8e7d")
    # Only the container's own cgroup carries its name.
    assert names["corral/web/sub"].kind == "cgroup"
    assert names["corral"].kind == "cgroup"
    assert names[""] == CgroupName("", "cgroup", "/")
    assert namer.invalid_states == 1  # the truncated broken-000000/state.json


def test_no_state_directory_means_no_containers(tmp_path: Path) -> None:
    namer = Namer(tmp_path / "does-not-exist")
    assert namer.name("corral/web") == CgroupName("corral/web", "cgroup", "corral/web")
    assert namer.invalid_states == 0


def _write_state(state_dir: Path, cid: str, state: dict[str, Any]) -> None:
    """As the runtime does: a temporary file renamed into place."""
    directory = state_dir / "containers" / cid
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.rename(tmp, directory / "state.json")


def test_the_cache_follows_the_state_directory(state_dir: Path) -> None:
    namer = Namer(state_dir)
    assert namer.name("corral/api").kind == "cgroup"
    # A new container appears ...
    _write_state(
        state_dir, "api-1", {"id": "api-1", "name": "api", "labels": {}, "cgroup": "corral/api"}
    )
    assert namer.name("corral/api") == CgroupName("corral/api", "container", "api", "api-1")
    # ... is relabelled (the file is replaced) ...
    _write_state(
        state_dir,
        "api-1",
        {"id": "api-1", "name": "api", "labels": {"v": "2"}, "cgroup": "corral/api"},
    )
    assert namer.name("corral/api").labels == {"v": "2"}
    # ... and goes away.
    shutil.rmtree(state_dir / "containers" / "api-1")
    assert namer.name("corral/api").kind == "cgroup"


def test_the_cache_holds_only_the_paths_of_the_last_call(state_dir: Path) -> None:
    namer = Namer(state_dir)
    first = namer.names([f"churn/{i}" for i in range(1000)])
    assert len(first) == 1000
    namer.names(["system.slice"])
    assert list(namer._cache) == ["system.slice"]
    # Cached names are the same objects until the state changes.
    a, b = namer.name("system.slice"), namer.name("system.slice")
    assert a is b


@pytest.mark.parametrize(
    "state",
    [
        [],
        {"id": "other", "name": "x", "cgroup": "corral/x"},  # id is not the directory's
        {"id": "c1", "name": 5, "cgroup": "corral/x"},
        {"id": "c1", "name": "x"},
        {"id": "c1", "name": "x", "cgroup": "corral/x", "labels": {"k": 1}},
        {"id": "c1", "name": "x", "cgroup": "corral/x", "labels": ["k"]},
        {"id": "c1", "name": "x", "cgroup": "../escape"},
    ],
)
def test_malformed_states_are_refused(state: object) -> None:
    assert parse_state(state, "c1") is None


def test_a_valid_state_without_labels() -> None:
    name = parse_state({"id": "c1", "name": "x", "cgroup": "/corral/x/"}, "c1")
    assert name == CgroupName("corral/x", "container", "x", "c1", {})
