"""runtime/container/userns.py: /etc/subuid parsing, id maps and idmapped root filesystems.

Whatever changes process state runs in forked children that report JSON through a pipe; the
assertions run here. The idmapped-rootfs tests run in a child with a private mount namespace
standing for the host, on an ext4 image it loop-mounts there: ext4 can be idmapped on 6.1 and
6.18 alike, while tmpfs only can from 6.3 and overlayfs (the machine's /tmp) cannot at all.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime import syscalls as sc
from runtime.cgroupfs.mounts import read_mountinfo
from runtime.container.mounts import MountSpec, setup_filesystem
from runtime.container.userns import (
    DEFAULT_RANGE,
    IdMap,
    IdmapUnsupported,
    SubidError,
    UserNamespaceSpec,
    attach,
    auto_mapping,
    check_idmap_support,
    idmapped_rootfs,
    map_text,
    parse_subid,
    userns_fd,
    write_maps,
)
from runtime.container.volumes import Volume

Report = dict[str, Any]
MAPPED = 100000
SPEC = UserNamespaceSpec((IdMap(0, MAPPED, 65536),), (IdMap(0, MAPPED, 65536),))
NOBODY = 65534  # /proc/sys/kernel/overflowuid: how an unmapped id shows


class ChildFailed(Exception):
    """A forked child failed; the message is its traceback."""


def _send(fd: int, report: Report) -> None:
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(fd, data) :]
    os.close(fd)


def forked(body: Callable[[], Report]) -> Report:
    """``body()`` in a forked child; its report, or ChildFailed with its traceback."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            report = body()
        except BaseException:
            report = {"error": traceback.format_exc()}
        _send(w, report)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    status = os.waitpid(pid, 0)[1]
    report = json.loads(data) if data else {"error": f"no report, wait status {status}"}
    if "error" in report:
        raise ChildFailed(report["error"])
    return dict(report)


def in_userns(
    spec: UserNamespaceSpec, body: Callable[[], Report], outside: Callable[[int], Report]
) -> Report:
    """Fork a child that unshares a user namespace; write_maps here; the child records its
    uid, becomes root (setresuid 0) and runs ``body``; ``outside(pid)`` runs here while the
    child still lives. Returns {"inside": ..., "outside": ...}."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def child() -> Report:
        os.close(ready_r)
        os.close(go_w)
        sc.unshare(sc.CLONE_NEWUSER)
        os.write(ready_w, b"1")
        if os.read(go_r, 1) != b"1":
            raise RuntimeError("no maps were written")
        before = [os.getuid(), os.getgid()]
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        return {"before_setresuid": before, **body()}

    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        try:
            report = child()
        except BaseException:
            report = {"error": traceback.format_exc()}
        _send(result_w, report)
        os.read(go_r, 1)  # stay alive for ``outside`` until the parent says done
        os._exit(0)
    for fd in (ready_w, go_r, result_w):
        os.close(fd)
    try:
        if os.read(ready_r, 1) == b"1":
            write_maps(pid, spec)
            os.write(go_w, b"1")
        with os.fdopen(result_r, "rb") as f:
            inside = json.loads(f.read() or b'{"error": "no report"}')
        if "error" in inside:
            raise ChildFailed(inside["error"])
        return {"inside": inside, "outside": outside(pid)}
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)


def try_create(path: str) -> str:
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:
        return errno.errorcode[e.errno or 0]
    return "ok"


def owner(path: str | Path) -> list[int]:
    st = os.stat(path)
    return [st.st_uid, st.st_gid]


def nothing_outside(pid: int) -> Report:
    return {}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Under /tmp with mode 0755: the mapped root must traverse it (pytest's tmp_path lies
    under a 0700 directory of host root's)."""
    path = Path(tempfile.mkdtemp(prefix="corral-userns-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def ext4_image(tmp_path: Path) -> str:
    """A fresh, empty ext4 image (mkfs.ext4 from e2fsprogs); loop devices made available."""
    if not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], check=True)  # the machine's kernel has it as a module
    image = str(tmp_path / "rootfs.img")
    subprocess.run(["truncate", "-s", "64M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    return image


def on_private_ext4(image: str, where: Path, body: Callable[[Path], Report]) -> Report:
    """``body(mountpoint)`` in a child with a private mount namespace (standing for the
    host) where ``image`` is mounted at ``where``/fs, a root-owned ext4 filesystem."""

    def host() -> Report:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)  # nothing reaches the real host
        fs = where / "fs"
        fs.mkdir()
        subprocess.run(["mount", "-o", "loop", image, str(fs)], check=True)
        return body(fs)

    return forked(host)


def make_rootfs(fs: Path) -> tuple[Path, Path]:
    """fs/rootfs owned by host root, as a rootfs on disk is, and fs/vol, a volume source
    the user chowned to the mapped root (as docker's userns-remap asks)."""
    rootfs, vol = fs / "rootfs", fs / "vol"
    for name in ("etc", "tmp", "proc", "sys", "dev", "mnt"):
        (rootfs / name).mkdir(parents=True, mode=0o755)
    vol.mkdir()
    os.chown(vol, MAPPED, MAPPED)
    return rootfs, vol


# --- /etc/subuid and /etc/subgid ---


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_first_range_of_root_with_65536_ids_by_name_or_uid(tmp_path: Path) -> None:
    subuid = write(
        tmp_path / "subuid",
        "# comment\n\nalice:100000:65536\nroot:300000:1000\nroot:400000:70000\nroot:9:65536\n",
    )
    subgid = write(tmp_path / "subgid", "0:500000:65536\n")  # root named by its uid
    spec = auto_mapping(subuid=subuid, subgid=subgid)
    assert spec.uids == (IdMap(0, 400000, 65536),)  # 300000 is too small, 400000 comes first
    assert spec.gids == (IdMap(0, 500000, 65536),)
    assert map_text(spec.uids) == "0 400000 65536\n"
    assert auto_mapping("alice", subuid, subgid).uids == (IdMap(0, 100000, 65536),)


def test_default_range_without_a_file_or_an_entry(tmp_path: Path) -> None:
    other = write(tmp_path / "subuid", "bob:300000:65536\n")
    spec = auto_mapping(subuid=str(tmp_path / "missing"), subgid=other)
    assert spec.uids == spec.gids == (DEFAULT_RANGE,) == (IdMap(0, 100000, 65536),)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("root:100000", "expected NAME:START:COUNT"),
        (":100000:65536", "expected NAME:START:COUNT"),
        ("root:abc:65536", "START and COUNT must be decimal numbers"),
        ("root:100000:-5", "START and COUNT must be decimal numbers"),
        ("root:100000:0", "COUNT must be at least 1 and the range within 0..4294967294"),
        ("root:4294967000:65536", "COUNT must be at least 1 and the range within 0..4294967294"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path / "subuid", f"# ranges\nbob:300000:65536\n{line}\n")
    message = re.escape(f"{path} line 3 ({line!r}): {expected}")
    with pytest.raises(SubidError, match=message):
        auto_mapping(subuid=path, subgid=path)
    with pytest.raises(SubidError, match=message):
        parse_subid(Path(path).read_text(), path)


def test_unusable_ranges_are_refused_not_replaced_by_the_default(tmp_path: Path) -> None:
    small = write(tmp_path / "small", "root:200000:1000\nroot:300000:65535\n")
    with pytest.raises(SubidError, match=r"ranges of 'root' \(200000:1000 \(line 1\), 300000"):
        auto_mapping(subuid=small, subgid=small)
    zero = write(tmp_path / "zero", "root:0:65536\n")
    with pytest.raises(SubidError, match="line 1: START 0 would map container root to host"):
        auto_mapping(subuid=zero, subgid=zero)
    taken = write(tmp_path / "taken", "alice:150000:65536\n")
    with pytest.raises(SubidError, match="default 100000:65536 overlaps 'alice'"):
        auto_mapping(subuid=taken, subgid=taken)


def test_spec_refuses_overlaps_and_ranges_past_the_id_space() -> None:
    with pytest.raises(ValueError, match="'0 100000 10' and '5 200000 10' overlap"):
        UserNamespaceSpec((IdMap(0, 100000, 10), IdMap(5, 200000, 10)), SPEC.gids)
    with pytest.raises(ValueError, match="overlap \\(host ids\\)"):
        UserNamespaceSpec((IdMap(0, 100000, 10), IdMap(10, 100005, 10)), SPEC.gids)
    with pytest.raises(ValueError, match="size 0 must be at least 1"):
        IdMap(0, 100000, 0)
    with pytest.raises(ValueError, match="host ids must lie within"):
        IdMap(0, 0xFFFFFFFF, 1)
    with pytest.raises(ValueError, match="gid map has 0 lines"):
        UserNamespaceSpec(SPEC.uids, ())


# --- the maps, written from outside ---


def test_write_maps_in_order_and_the_process_is_root_inside_only() -> None:
    def body() -> Report:
        return {
            "ids": [os.getuid(), os.geteuid(), os.getgid()],
            "uid_map": Path("/proc/self/uid_map").read_text(),
            "host_root_file": owner("/"),
        }

    def outside(pid: int) -> Report:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        return {
            name: Path(f"/proc/{pid}/{name}").read_text()
            for name in ("setgroups", "uid_map", "gid_map")
        } | {"status": [line for line in status if line.startswith(("Uid:", "Gid:"))]}

    report = in_userns(SPEC, body, outside)
    inside, out = report["inside"], report["outside"]
    assert out["setgroups"] == "deny\n"
    assert out["uid_map"].split() == out["gid_map"].split() == ["0", "100000", "65536"]
    assert inside["uid_map"].split() == ["0", "100000", "65536"]
    # Unshared but not yet setresuid: still host root, which the map leaves out.
    assert inside["before_setresuid"] == [NOBODY, NOBODY]
    assert inside["ids"] == [0, 0, 0]  # root inside...
    assert out["status"] == [f"Uid:\t{MAPPED}\t{MAPPED}\t{MAPPED}\t{MAPPED}",
                             f"Gid:\t{MAPPED}\t{MAPPED}\t{MAPPED}\t{MAPPED}"]  # fmt: skip
    assert inside["host_root_file"] == [NOBODY, NOBODY]  # ...and host root is nobody there


def test_write_maps_errors_name_the_file_and_the_likely_cause() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a plain child: still in the initial user namespace
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        with pytest.raises(OSError, match=f"/proc/{pid}/setgroups: EPERM .*not in a new user"):
            write_maps(pid, SPEC)
    finally:
        os.close(w)
        os.waitpid(pid, 0)
    with pytest.raises(OSError, match=f"/proc/{pid}/setgroups: ENOENT .*has exited"):
        write_maps(pid, SPEC)

    def again(pid: int) -> Report:
        try:
            write_maps(pid, SPEC)
        except OSError as e:
            return {"second": str(e)}
        return {"second": "accepted"}

    second = in_userns(SPEC, dict, again)["outside"]["second"]
    assert "setgroups" in second and "EPERM" in second and "written already" in second


def test_userns_fd_outlives_its_helper_and_carries_the_map() -> None:
    fd = userns_fd(SPEC)
    try:
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("user:[")
        with pytest.raises(ChildProcessError):  # the helper has exited and been reaped
            os.waitpid(-1, os.WNOHANG)

        def enter() -> Report:
            sc.setns(fd, sc.CLONE_NEWUSER)
            return {"uid_map": Path("/proc/self/uid_map").read_text().split()}

        assert forked(enter)["uid_map"] == ["0", "100000", "65536"]
    finally:
        os.close(fd)


# --- the idmapped root filesystem ---


def test_mapped_root_writes_rootfs_as_host_root_and_volumes_as_mapped(
    ext4_image: str, scratch: Path
) -> None:
    def host(fs: Path) -> Report:
        rootfs, vol = make_rootfs(fs)
        tree = idmapped_rootfs(str(rootfs), SPEC)

        def container() -> Report:
            before = {"etc": owner(rootfs / "etc"), "create": try_create(f"{rootfs}/etc/a")}
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
            attach(tree, str(rootfs))
            os.close(tree)
            sc.mount(str(vol), f"{rootfs}/mnt", None, sc.MS_BIND | sc.MS_REC)  # a volume
            os.mkdir(f"{rootfs}/etc/made")
            after = {
                "etc": owner(rootfs / "etc"),
                "create": try_create(f"{rootfs}/etc/made/file"),
                "volume": [owner(f"{rootfs}/mnt"), try_create(f"{rootfs}/mnt/file")],
            }
            return {"before": before, "after": after}

        report: Report = in_userns(SPEC, container, nothing_outside)["inside"]
        os.close(tree)
        report["host"] = {
            "made": owner(rootfs / "etc" / "made"),
            "file": owner(rootfs / "etc" / "made" / "file"),
            "volume_file": owner(vol / "file"),
            "mounts": [m.mountpoint for m in read_mountinfo() if m.mountpoint.startswith(str(fs))],
        }
        return report

    report = on_private_ext4(ext4_image, scratch, host)
    # Without the idmapped mount the rootfs belongs to an unmapped uid: read-only to root.
    assert report["before"] == {"etc": [NOBODY, NOBODY], "create": "EACCES"}
    assert report["after"] == {"etc": [0, 0], "create": "ok", "volume": [[0, 0], "ok"]}
    seen = report["host"]
    assert seen["made"] == seen["file"] == [0, 0]  # stored as host root: that is idmapping
    assert seen["volume_file"] == [MAPPED, MAPPED]  # a plain bind: the mapped uid
    assert seen["mounts"] == [str(scratch / "fs")]  # the attach stayed in the container


def test_runc_mount_sequence_on_an_attached_idmapped_rootfs(ext4_image: str, scratch: Path) -> None:
    """What F2's container process does: user ns, maps, the other namespaces, attach at the
    rootfs path, then setup_filesystem with that path, pivot_root included."""

    def host(fs: Path) -> Report:
        rootfs, vol = make_rootfs(fs)
        tree = idmapped_rootfs(str(rootfs), SPEC)
        volume = Volume(str(vol), "/data")
        spec = MountSpec(str(rootfs), volumes=(volume,), userns=True)

        def pid1() -> Report:
            setup_filesystem(spec)
            return {
                "pid": os.getpid(),
                "root": owner("/"),
                "etc": try_create("/etc/app.conf"),
                "data": try_create("/data/out"),
                "uid_map": Path("/proc/self/uid_map").read_text().split(),
            }

        def container() -> Report:
            ns = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
            sc.unshare(ns | sc.CLONE_NEWNET | sc.CLONE_NEWCGROUP)
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
            attach(tree, str(rootfs))
            os.close(tree)
            return forked(pid1)

        report: Report = in_userns(SPEC, container, nothing_outside)["inside"]
        os.close(tree)
        files = {"etc": rootfs / "etc" / "app.conf", "data": vol / "out"}
        return report | {"host": {k: owner(path) for k, path in files.items()}}

    report = on_private_ext4(ext4_image, scratch, host)
    assert report["pid"] == 1
    assert report["root"] == [0, 0] and report["uid_map"] == ["0", "100000", "65536"]
    assert report["etc"] == report["data"] == "ok"
    assert report["host"] == {"etc": [0, 0], "data": [MAPPED, MAPPED]}


def test_unsupported_filesystem_says_what_to_do(scratch: Path) -> None:
    def host() -> Report:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        ramfs = scratch / "ramfs"
        ramfs.mkdir()
        sc.mount("ramfs", str(ramfs), "ramfs")
        (ramfs / "etc").mkdir()
        fds = sorted(os.listdir("/proc/self/fd"))
        reason = check_idmap_support(str(ramfs))
        try:
            idmapped_rootfs(str(ramfs), SPEC)
        except IdmapUnsupported as e:
            message = str(e)
        leftover_fds = sorted(os.listdir("/proc/self/fd")) != fds
        return {"reason": reason, "message": message, "leftover_fds": leftover_fds}

    report = forked(host)
    release = os.uname().release
    ramfs = scratch / "ramfs"
    assert report["reason"] == (
        f"its filesystem (ramfs at {ramfs}) does not support idmapped mounts on Linux {release}"
    )
    assert report["message"] == (
        f"--userns auto cannot make {ramfs} writable for the container's root: "
        f"{report['reason']}. Put the root filesystem on ext4, xfs or btrfs (tmpfs from "
        "Linux 6.3), or run with --userns host, or chown it to the mapped range (container "
        "root is host uid 100000, gid 100000)"
    )
    assert report["leftover_fds"] is False
    assert check_idmap_support(str(scratch / "missing")) == (
        f"root filesystem {scratch}/missing is not an existing directory"
    )


def test_tmpfs_can_be_idmapped_from_linux_6_3_procfs_never(scratch: Path) -> None:
    def host() -> Report:
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
        sc.mount("tmpfs", str(scratch), "tmpfs")
        return {"tmpfs": check_idmap_support(str(scratch)), "proc": check_idmap_support("/proc")}

    report = forked(host)
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert (report["tmpfs"] is None) == ((major, minor) >= (6, 3)), report["tmpfs"]
    assert report["proc"] is not None and "(proc at /proc)" in report["proc"]
