"""`corral rootfs busybox`: the tree it makes, chroot into it, refusals, and failures (a
read-only parent, a full filesystem midway) that must leave nothing behind. Mounts happen in
forked children with a private mount namespace, never in the pytest process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corral.cli import main
from runtime import syscalls
from runtime.rootfs import InvalidArgument, RootfsError, mounts_under, remove_tree
from runtime.rootfs.busybox import BUSYBOX, build_busybox, check_static, parse_applets

LISTED = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True).stdout.split()


def in_private_mounts(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a forked child with its own mount namespace (mounts private, so none
    reaches the host); its JSON-able result or its error comes back through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            out = {"result": work()}
        except BaseException as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(write_fd, json.dumps(out).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    out = json.loads(text)
    assert "error" not in out, out["error"]
    return out["result"]


def entries(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_tree_has_every_applet_the_dirs_with_modes_and_etc(tmp_path: Path) -> None:
    made = build_busybox(str(tmp_path / "rootfs"))
    root = made.path
    assert entries(tmp_path) == ["rootfs"]  # no staging directory left beside it
    applets = [a for a in LISTED if "/" in a and a != "bin/busybox"]
    assert made.applets == len(applets) > 200
    for rel in applets:
        link = root / rel
        assert link.is_symlink() and not os.readlink(link).startswith("/"), rel
        assert link.resolve() == root / "bin/busybox", rel
    assert not (root / "linuxrc").exists()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.iterdir() if p.is_dir()}
    assert modes["tmp"] == 0o1777 and modes["root"] == 0o700 and modes["proc"] == 0o555
    assert {"dev", "sys", "etc", "var", "run", "usr", "bin", "sbin"} <= set(modes)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    assert (root / "etc/passwd").read_text().splitlines() == [
        "root:x:0:0:root:/root:/bin/sh",
        "nobody:x:65534:65534:nobody:/home:/bin/false",
    ]
    assert "nobody:x:65534:" in (root / "etc/group").read_text().splitlines()
    for name in ("hosts", "resolv.conf", "hostname"):
        assert (root / "etc" / name).read_bytes() == b"", name
    assert made.size_bytes == os.path.getsize(BUSYBOX) + sum(
        (root / "etc" / n).stat().st_size for n in ("passwd", "group")
    )


def test_chroot_runs_the_shell_and_finds_users(tmp_path: Path) -> None:
    root = build_busybox(str(tmp_path / "rootfs")).path
    script = "echo ok; ls /bin | wc -l; id nobody; /usr/bin/env true && echo env"
    out = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", script], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    in_bin = len([a for a in LISTED if a.startswith("bin/")])  # bin/busybox among them
    assert out[:4] == [
        "ok",
        str(in_bin),
        "uid=65534(nobody) gid=65534(nobody) groups=65534(nobody)",
        "env",
    ]


def test_non_empty_dir_is_refused_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "rootfs"
    target.mkdir()
    (target / "precious").write_text("keep")
    with pytest.raises(InvalidArgument, match=r"exists and is not empty .*--force"):
        build_busybox(str(target))
    assert entries(tmp_path) == ["rootfs"] and entries(target) == ["precious"]
    build_busybox(str(target), force=True)
    assert entries(tmp_path) == ["rootfs"]  # the old tree was removed too
    assert not (target / "precious").exists() and (target / "bin/busybox").is_file()


def test_empty_dir_symlink_file_and_missing_parent(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert build_busybox(str(tmp_path / "empty")).path == tmp_path / "empty"
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    for name, message in [
        ("file", "exists and is not a directory"),
        ("link", "is a symlink"),
        ("nodir/rootfs", "no such directory"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            build_busybox(str(tmp_path / name), force=True)
    assert entries(tmp_path) == ["empty", "file", "link"]


def test_read_only_parent_fails_before_anything_is_made(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()

    def work() -> str:
        syscalls.mount(str(parent), str(parent), None, syscalls.MS_BIND)
        flags = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY
        syscalls.mount(None, str(parent), None, flags)
        try:
            build_busybox(str(parent / "rootfs"))
        except RootfsError as e:
            return str(e)
        return "built"

    assert "cannot create a directory in" in in_private_mounts(work)
    assert entries(parent) == []


@pytest.mark.parametrize(
    "options, failing",
    [("size=1m", "copy"), ("nr_inodes=64", "links")],
    ids=["copy-hits-ENOSPC", "symlinks-hit-inode-limit"],
)
def test_failure_midway_removes_the_staging_dir(tmp_path: Path, options: str, failing: str) -> None:
    small = tmp_path / "small"
    small.mkdir()

    def work() -> list[str]:
        syscalls.mount("tmpfs", str(small), "tmpfs", 0, options)
        try:
            build_busybox(str(small / "rootfs"))
        except RootfsError as e:
            return [str(e), *os.listdir(small)]
        return ["built"]

    message, *left = in_private_mounts(work)
    assert left == []
    head = f"{small}/rootfs: No space left on device at /"
    assert message.startswith(head) and message.endswith("; nothing was made"), message
    where = message[len(head) : -len("; nothing was made")]
    if failing == "copy":
        assert where == "bin/busybox"
    else:  # an applet's symlink, after the directories and the binary were made
        assert where in LISTED and where != "bin/busybox"


def test_remove_tree_unmounts_and_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    stage = tmp_path / "stage"

    def work() -> list[Any]:
        (stage / "proc").mkdir(parents=True)
        (stage / "dev").mkdir()
        syscalls.mount("proc", str(stage / "proc"), "proc")
        syscalls.mount("tmpfs", str(stage / "dev"), "tmpfs")
        (stage / "dev/null").write_text("")
        (stage / "escape").symlink_to(outside)
        (stage / "root").symlink_to("/")
        (stage / "dir").mkdir()
        (stage / "dir/up").symlink_to("../../outside")
        before = mounts_under(stage)
        remove_tree(stage)
        return [before, mounts_under(tmp_path), os.path.lexists(stage)]

    before, after, exists = in_private_mounts(work)
    assert before == [str(stage / "dev"), str(stage / "proc")]
    assert after == [] and not exists
    assert (outside / "keep").read_text() == "x"


def test_mounts_under_matches_whole_components_and_unescapes() -> None:
    line = "{id} 1 0:5 / {point} rw - tmpfs tmpfs rw"
    text = "\n".join(
        line.format(id=i, point=p)
        for i, p in enumerate(["/", "/srv/a", "/srv/ab", "/srv/a/dev", "/srv/a/my\\040dir"])
    )
    assert mounts_under(Path("/srv/a"), text) == ["/srv/a/dev", "/srv/a/my dir", "/srv/a"]


def test_applet_list_is_checked() -> None:
    assert parse_applets("bin/sh\nlinuxrc\nbin/busybox\nusr/bin/env\nbin/sh\n") == [
        "bin/sh",
        "usr/bin/env",
    ]
    for bad in ["/bin/sh", "../etc/passwd", "bin/../../x", "usr//bin/env"]:
        with pytest.raises(RootfsError, match="not a relative path"):
            parse_applets(bad)
    with pytest.raises(RootfsError, match="no applets"):
        parse_applets("linuxrc\n")


def test_only_a_static_elf_busybox_is_accepted(tmp_path: Path) -> None:
    check_static(BUSYBOX)
    with pytest.raises(RootfsError, match="dynamically linked; install Debian's busybox-static"):
        check_static("/bin/ls")
    (tmp_path / "script").write_text("#!/bin/sh\n")
    with pytest.raises(RootfsError, match="not an ELF executable"):
        check_static(str(tmp_path / "script"))
    with pytest.raises(RootfsError, match="no such file; install Debian's busybox-static"):
        check_static(str(tmp_path / "absent"))


def test_cli_reports_and_exits_0_1_2(tmp_path: Path) -> None:
    runner = CliRunner()
    target = str(tmp_path / "rootfs")
    ok = runner.invoke(main, ["rootfs", "busybox", target])
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith(f"corral rootfs: made {target}: busybox with ")
    assert "applets, 1." in ok.stdout and ok.stdout.endswith(" MiB\n")
    again = runner.invoke(main, ["rootfs", "busybox", target])
    assert again.exit_code == 2
    assert (
        again.stderr
        == f"corral rootfs: {target} exists and is not empty (use --force to replace it)\n"
    )
    dynamic = runner.invoke(
        main, ["rootfs", "busybox", str(tmp_path / "b"), "--busybox", "/bin/ls"]
    )
    assert dynamic.exit_code == 1 and dynamic.stderr.startswith("corral rootfs: /bin/ls is dyn")
    assert entries(tmp_path) == ["rootfs"]
