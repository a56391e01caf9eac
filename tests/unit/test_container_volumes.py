"""Volumes (runtime/container/volumes.py): ``-v`` parsing, resolve_in_root against hostile
symlinks, and the bind mounts in a real container (harness in test_container_mounts.py)."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_container_mounts import (
    ContainerError,
    build_rootfs,
    by_point,
    in_container,
    open_scratch,
    read_mounts,
    try_write,
)

from runtime import syscalls as sc
from runtime.container.mounts import MountSpec
from runtime.container.volumes import (
    VOLUME_FORM,
    Volume,
    VolumeError,
    parse_volume,
    parse_volumes,
    resolve_in_root,
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with open_scratch() as path:
        yield path


# --- parsing ---


def test_parse_accepts_src_dst_and_ro_rw(tmp_path: Path) -> None:
    src = str(tmp_path)
    assert parse_volume(f"{src}:/data") == Volume(src, "/data")
    assert parse_volume(f"{src}:/data:rw") == Volume(src, "/data")
    assert parse_volume(f"{src}/:/a//b/./c/:ro") == Volume(src, "/a/b/c", read_only=True)
    assert str(parse_volume(f"{src}:/data:ro")) == f"{src}:/data:ro"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("{src}", "1 ':'-separated fields, not 2 or 3"),
        ("{src}:/a:ro:z", "4 ':'-separated fields"),
        ("relative:/data", "source 'relative' is not an absolute host path"),
        ("{src}/missing:/data", "does not exist"),
        ("{src}:data", "destination 'data' is not an absolute path"),
        ("{src}:/a/../etc", "destination '/a/../etc' contains '..'"),
        ("{src}:/..", "contains '..'"),
        ("{src}://", "destination cannot be '/'"),
        ("{src}:/proc", "is /proc or inside it"),
        ("{src}:/proc/sys/kernel", "is /proc or inside it"),
        ("{src}:/data:rx", "unknown option 'rx' (allowed: ro, rw)"),
        ("{src}:/data:", "unknown option ''"),
        ("{src}:/data:ro,rw", "unknown option 'ro,rw'"),
    ],
)
def test_parse_errors_name_the_spec_and_the_allowed_form(
    tmp_path: Path, spec: str, why: str
) -> None:
    text = spec.format(src=tmp_path)
    with pytest.raises(VolumeError) as info:
        parse_volume(text)
    assert str(info.value).startswith(f"volume {text!r}: ")
    assert why in str(info.value) and str(info.value).endswith(VOLUME_FORM)


def test_two_volumes_on_one_destination_are_refused(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(VolumeError, match="'/d' is also used by") as info:
        parse_volumes([f"{tmp_path}:/d", f"{tmp_path}/b:/d/:ro"])
    assert f"{tmp_path}:/d" in str(info.value)
    assert len(parse_volumes([f"{tmp_path}:/d", f"{tmp_path}/b:/d/e"])) == 2


# --- resolve_in_root ---


def test_resolve_keeps_absolute_and_dotdot_links_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "a" / "b").mkdir(parents=True)
    (root / "mnt").symlink_to("/etc")
    (root / "up").symlink_to("../../../../../../../etc")
    (root / "a" / "b" / "back").symlink_to("../../../..")
    (root / "hop").symlink_to("/mnt/")
    (root / "rootlink").symlink_to("/")
    r = str(root)
    assert resolve_in_root(r, "/mnt/passwd") == f"{r}/etc/passwd"
    assert resolve_in_root(r, "/up/passwd") == f"{r}/etc/passwd"
    assert resolve_in_root(r, "/a/b/back/etc") == f"{r}/etc"
    assert resolve_in_root(r, "/hop/x/y") == f"{r}/etc/x/y"
    assert resolve_in_root(r, "/rootlink/rootlink/../..") == r
    assert resolve_in_root(r, "../../../etc/shadow") == f"{r}/etc/shadow"
    assert resolve_in_root(r, "/new/dir/../file") == f"{r}/new/file"
    assert resolve_in_root(r, "/mnt", follow=False) == f"{r}/mnt"
    assert resolve_in_root(r, "/hop/x", follow=False) == f"{r}/etc/x"


def test_resolve_refuses_symlink_loops_and_paths_through_files(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "a").symlink_to("/b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "file").write_text("")
    for path in ("/loop", "/a/x", "/b"):
        with pytest.raises(OSError) as info:
            resolve_in_root(str(tmp_path), path)
        assert info.value.errno == errno.ELOOP
    with pytest.raises(NotADirectoryError):
        resolve_in_root(str(tmp_path), "/file/x")


# --- in a container ---


def test_volumes_write_through_or_are_read_only_with_their_submounts(scratch: Path) -> None:
    rootfs = build_rootfs(scratch / "rootfs")
    rw, ro = scratch / "rw", scratch / "ro"
    (ro / "sub").mkdir(parents=True)
    rw.mkdir()
    (scratch / "config").write_text("key=value\n")

    def prepare() -> None:  # a mount inside the ro volume's source must be ro too
        sc.mount("tmpfs", str(ro / "sub"), "tmpfs", 0)

    def probe() -> dict[str, Any]:
        with open("/etc/app/config") as f:
            config = f.read()
        writes = {p: try_write(p) for p in ("/srv/rw/x", "/srv/ro/x", "/srv/ro/sub/x")}
        return read_mounts() | writes | {"config": [config, try_write("/etc/app/config")]}

    volumes = parse_volumes(
        [f"{rw}:/srv/rw", f"{ro}:/srv/ro:ro", f"{scratch}/config:/etc/app/config:ro"]
    )
    report = in_container(MountSpec(str(rootfs), volumes=volumes), probe, prepare=prepare)
    assert report["/srv/rw/x"] == "ok" and (rw / "x").read_text() == "x"
    assert report["/srv/ro/x"] == "EROFS" and report["/srv/ro/sub/x"] == "EROFS"
    assert report["config"] == ["key=value\n", "EROFS"]
    m = by_point(report)
    assert [m[p].options[0] for p in ("/srv/rw", "/srv/ro", "/srv/ro/sub")] == ["rw", "ro", "ro"]
    # Destinations are created in the rootfs, a directory or a file as the source is.
    assert (rootfs / "srv" / "ro").is_dir() and (rootfs / "etc" / "app" / "config").is_file()


def test_hostile_symlinks_in_the_rootfs_cannot_move_a_volume_out(scratch: Path) -> None:
    rootfs = build_rootfs(scratch / "rootfs")
    (rootfs / "mnt").symlink_to("/etc")
    (rootfs / "up").symlink_to("../../../../../../../../etc")
    (rootfs / "hop").symlink_to("/mnt/")
    source = scratch / "volume"
    source.mkdir()
    (source / "marker").write_text("volume\n")
    (scratch / "file").write_text("file volume\n")
    names = [f"corral-escape-{secrets.token_hex(4)}-{i}" for i in range(3)]

    def probe() -> dict[str, Any]:
        found = {}
        for name, inner in zip(names, ("marker", "marker", ""), strict=True):
            with open(os.path.join("/etc", name, inner).rstrip("/")) as f:
                found[name] = f.read()
        return found

    volumes = parse_volumes(
        [
            f"{source}:/mnt/{names[0]}",
            f"{source}:/up/{names[1]}:ro",
            f"{scratch}/file:/hop/{names[2]}",
        ]
    )
    report = in_container(MountSpec(str(rootfs), volumes=volumes), probe)
    assert report == {names[0]: "volume\n", names[1]: "volume\n", names[2]: "file volume\n"}
    for name in names:
        assert not os.path.lexists(f"/etc/{name}")
        assert os.path.lexists(rootfs / "etc" / name)


@pytest.mark.parametrize(
    ("links", "destination", "error"),
    [
        ({"loop": "loop"}, "/loop/x", "more than 255 symlinks"),
        ({"a": "b", "b": "/a"}, "/a", "more than 255 symlinks"),
        ({"mnt": "/proc"}, "/mnt/sys", "volume /mnt/sys resolves into /proc"),
    ],
)
def test_a_volume_that_cannot_be_placed_fails_and_leaves_nothing(
    scratch: Path, links: dict[str, str], destination: str, error: str
) -> None:
    rootfs = build_rootfs(scratch / "rootfs")
    for name, target in links.items():
        (rootfs / name).symlink_to(target)
    volumes = (Volume(str(scratch), destination),)
    # in_container itself checks that the host's mount table is unchanged.
    with pytest.raises(ContainerError, match=error):
        in_container(MountSpec(str(rootfs), volumes=volumes), lambda: {})
