"""The container's filesystem (runtime/container/mounts.py, devices.py) against the real kernel.

Each container test forks a child that unshares mnt, pid, ipc, uts, cgroup (and net) -- after
a user namespace whose maps the test writes from outside, for the userns variants -- and
forks again so that the grandchild is PID 1 of the new pid namespace, as /proc needs. The
grandchild sets the filesystem up in a tiny busybox rootfs, pivots into it and collects facts
(mountinfo, /dev, errnos) with what Python already has loaded (the host's files are gone),
reports them as JSON through a pipe, and the assertions run here. Every run also checks that
the host's mount table is the same afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from runtime import syscalls as sc
from runtime.cgroupfs.mounts import Mount, parse_mountinfo, read_mountinfo
from runtime.container.mounts import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    MountSpec,
    plan_mounts,
    setup_filesystem,
)
from runtime.container.volumes import Volume

Probe = Callable[[], dict[str, Any]]
CONTAINER_NS = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
MAPPED_ROOT = 100000  # host uid and gid of the container's root in the userns variants
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


class ContainerError(Exception):
    """The container side failed; the message is its traceback."""


def build_rootfs(root: Path, owner: int | None = None) -> Path:
    """A busybox root filesystem: bin/ with a static busybox and a few applets, etc, tmp."""
    assert os.path.isfile(BUSYBOX), "these tests need a static busybox (Debian busybox-static)"
    for name in ("bin", "etc", "tmp", "proc", "sys", "dev"):
        (root / name).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "mount", "touch"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "hostname").write_text("corral-test\n")
    if owner is not None:
        for path in [root, *root.rglob("*")]:
            os.lchown(path, owner, owner)
    return root


@contextmanager
def open_scratch() -> Iterator[Path]:
    """A directory every uid can traverse (pytest's tmp_path is under a 0700 directory,
    which a user namespace's root, mapped to an unprivileged host uid, cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix="corral-mounts-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with open_scratch() as path:
        yield path


def host_mounts() -> Counter[tuple[str, ...]]:
    return Counter(
        (m.mountpoint, m.root, m.fstype, m.source, ",".join(m.options)) for m in read_mountinfo()
    )


def in_container(
    spec: MountSpec,
    probe: Probe,
    *,
    id_count: int | None = None,
    net: bool = True,
    prepare: Callable[[], None] | None = None,
    host_prepare: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``probe`` as PID 1 of a container set up by setup_filesystem(``spec``).

    ``id_count``: first unshare a user namespace mapping 0..id_count-1 to MAPPED_ROOT...
    ``prepare`` runs in the container's mount namespace before the setup; ``host_prepare``
    before any user namespace, in a private mount namespace standing for the host's.
    """
    before = host_mounts()
    result_r, result_w = os.pipe()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (result_r, ready_r, go_w):  # so that a read sees EOF if the parent fails
            os.close(fd)
        hooks = (host_prepare, prepare)
        _child(spec, probe, id_count, net, hooks, result_w, ready_w, go_r)
    for fd in (result_w, ready_w, go_r):
        os.close(fd)
    try:
        if id_count is not None and os.read(ready_r, 1) == b"1":
            for name, text in (("setgroups", "deny"), ("uid_map", None), ("gid_map", None)):
                Path(f"/proc/{pid}/{name}").write_text(text or f"0 {MAPPED_ROOT} {id_count}\n")
            os.write(go_w, b"1")
        with os.fdopen(result_r, "rb") as f:
            data = f.read()
    finally:
        os.close(ready_r)
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    assert host_mounts() == before, "the host's mount table changed"
    report: dict[str, Any] = json.loads(data) if data else {"error": f"no report ({status})"}
    if "error" in report:
        raise ContainerError(report["error"])
    assert os.waitstatus_to_exitcode(status) == 0
    return report


def _child(
    spec: MountSpec,
    probe: Probe,
    id_count: int | None,
    net: bool,
    hooks: tuple[Callable[[], None] | None, Callable[[], None] | None],
    result_w: int,
    ready_w: int,
    go_r: int,
) -> None:
    code = 1
    host_prepare, prepare = hooks
    try:
        if host_prepare is not None:
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)  # nothing reaches the host
            host_prepare()
        if id_count is not None:
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            if os.read(go_r, 1) != b"1":
                raise RuntimeError("the parent wrote no uid and gid maps")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        # The cgroup namespace comes after any user namespace, so that one owns it.
        sc.unshare(CONTAINER_NS | sc.CLONE_NEWCGROUP | (sc.CLONE_NEWNET if net else 0))
        pid = os.fork()
        if pid == 0:
            _container(spec, probe, prepare, result_w)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except BaseException:
        _report(result_w, {"error": traceback.format_exc()})
    os._exit(code)


def _container(
    spec: MountSpec, probe: Probe, prepare: Callable[[], None] | None, result_w: int
) -> None:
    try:
        if prepare is not None:
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)  # nothing reaches the host
            prepare()
        setup_filesystem(spec)
        report = probe()
    except BaseException:
        report = {"error": traceback.format_exc()}
    _report(result_w, report)
    os._exit(0)


def _report(fd: int, report: dict[str, Any]) -> None:
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(fd, data) :]


# --- what the container side can do with the modules already loaded ---


def try_write(path: str, *, create: bool = True) -> str:
    """Return "ok" or the errno name of opening ``path`` for writing and, with ``create``,
    of writing one byte; without it nothing is written (the open alone tells of EROFS)."""
    try:
        fd = os.open(path, os.O_WRONLY | (os.O_CREAT if create else 0), 0o644)
        try:
            if create:
                os.write(fd, b"x")
        finally:
            os.close(fd)
    except OSError as e:
        return errno.errorcode[e.errno or 0]
    return "ok"


def describe_dir(path: str) -> dict[str, list[Any]]:
    """name -> [kind, major, minor, mode, uid, link target] for each entry of ``path``."""
    out: dict[str, list[Any]] = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        st = os.lstat(full)
        kind = "chr" if stat.S_ISCHR(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else ""
        kind = "lnk" if stat.S_ISLNK(st.st_mode) else kind or "file"
        link = os.readlink(full) if kind == "lnk" else None
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        out[name] = [kind, major, minor, stat.S_IMODE(st.st_mode), st.st_uid, link]
    return out


def run_sh(command: str) -> list[Any]:
    """[exit status, output] of the rootfs' busybox sh running ``command``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.execv("/bin/sh", ["sh", "-c", command])
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        output = f.read().decode()
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), output]


def read_mounts() -> dict[str, Any]:
    with open("/proc/self/mountinfo") as f:
        return {"mountinfo": f.read(), "root": sorted(os.listdir("/"))}


def by_point(report: dict[str, Any]) -> dict[str, Mount]:
    return {m.mountpoint: m for m in parse_mountinfo(report["mountinfo"])}


def on_host(paths: tuple[str, ...]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


# --- the plan ---


def test_plan_is_dockers_default_mounts_then_volumes_by_depth() -> None:
    volumes = (Volume("/srv/b", "/data/deep/b"), Volume("/srv/a", "/data", read_only=True))
    steps = plan_mounts(MountSpec("/rootfs", volumes=volumes))
    assert [s.describe() for s in steps] == [
        "proc on /proc type proc (rw,nosuid,nodev,noexec)",
        "tmpfs on /dev type tmpfs (rw,nosuid,strictatime,mode=755,size=65536k)",
        "devpts on /dev/pts type devpts (rw,nosuid,noexec,"
        "newinstance,ptmxmode=0666,mode=0620,gid=5)",
        "shm on /dev/shm type tmpfs (rw,nosuid,nodev,noexec,mode=1777,size=65536k)",
        "mqueue on /dev/mqueue type mqueue (rw,nosuid,nodev,noexec)",
        "sysfs on /sys type sysfs (ro,nosuid,nodev,noexec)",
        "cgroup on /sys/fs/cgroup type cgroup2 (ro,nosuid,nodev,noexec,relatime)",
        "/srv/a on /data type bind (ro,bind,rec)",
        "/srv/b on /data/deep/b type bind (rw,bind,rec)",
    ]


def test_plan_in_a_user_namespace_says_how_it_falls_back() -> None:
    steps = {s.target: s for s in plan_mounts(MountSpec("/rootfs", userns=True))}
    assert steps["/dev/pts"].retry_data == "newinstance,ptmxmode=0666,mode=0620"
    assert steps["/sys"].fallback_bind == "/sys"
    assert steps["/sys"].describe().endswith(", else host /sys bound read-only")
    plain = {s.target: s for s in plan_mounts(MountSpec("/rootfs"))}
    assert plain["/dev/pts"].retry_data is None and plain["/sys"].fallback_bind is None


# --- in a container, as root ---


def test_mount_table_after_pivot_is_exactly_the_containers(scratch: Path) -> None:
    rootfs = build_rootfs(scratch / "rootfs")

    def probe() -> dict[str, Any]:
        with open("/proc/self/cgroup") as f:
            return read_mounts() | {"cgroup": f.read().splitlines()}

    report = in_container(MountSpec(str(rootfs)), probe)
    mounts = parse_mountinfo(report["mountinfo"])
    expected = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"}
    expected |= {"/sys/fs/cgroup", *on_host(DEFAULT_MASKED_PATHS)}
    expected |= set(on_host(DEFAULT_READONLY_PATHS))
    # Nothing of the host's is left: not its root, not one of its mounts.
    assert sorted(m.mountpoint for m in mounts) == sorted(expected)
    assert report["root"] == sorted(os.listdir(rootfs))
    m = by_point(report)
    assert m["/"].root == str(rootfs)
    safe = {"nosuid", "nodev", "noexec"}
    for point, fstype, options in (
        ("/proc", "proc", {"rw", *safe}),
        ("/sys", "sysfs", {"ro", *safe}),
        ("/sys/fs/cgroup", "cgroup2", {"ro", *safe}),
        ("/dev", "tmpfs", {"rw", "nosuid"}),
        ("/dev/pts", "devpts", {"rw", "nosuid", "noexec"}),
        ("/dev/shm", "tmpfs", {"rw", *safe}),
        ("/dev/mqueue", "mqueue", {"rw", *safe}),
    ):
        assert (m[point].fstype, m[point].root) == (fstype, "/"), point
        assert options <= set(m[point].options), point
    assert set(m["/dev"].options) == {"rw", "nosuid"}  # strictatime shows no atime option
    assert {"mode=755", "size=65536k"} <= set(m["/dev"].super_options)
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= set(m["/dev/pts"].super_options)
    assert "size=65536k" in m["/dev/shm"].super_options
    # The cgroup namespace: the container's own cgroup is its root.
    assert "0::/" in report["cgroup"]


def test_dev_has_only_the_default_nodes_and_links(scratch: Path) -> None:
    def probe() -> dict[str, Any]:
        before = describe_dir("/dev")
        ptmx = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
        pts = sorted(os.listdir("/dev/pts"))
        os.close(ptmx)
        with open("/dev/zero", "rb") as f:
            zeros = f.read(4)
        return {
            "dev": before,
            "pts": pts,
            "zeros": zeros.hex(),
            "full": try_write("/dev/full", create=True),
            "shm": stat.S_IMODE(os.stat("/dev/shm").st_mode),
            "sh": run_sh("ls /dev; cat /etc/hostname"),
        }

    report = in_container(MountSpec(str(build_rootfs(scratch / "rootfs"))), probe)
    nodes = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8)}
    nodes |= {"urandom": (1, 9), "tty": (5, 0)}
    links = {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0"}
    links |= {"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
    if os.path.exists("/proc/kcore"):
        links["core"] = "/proc/kcore"
    dev = report["dev"]
    assert set(dev) == {*nodes, *links, "pts", "shm", "mqueue"}
    for name, (major, minor) in nodes.items():
        assert dev[name] == ["chr", major, minor, 0o666, 0, None], name
    for name, target in links.items():
        assert dev[name][0] == "lnk" and dev[name][5] == target, name
    # The container's own devpts instance: its first terminal is 0, whatever the host has.
    assert report["pts"] == ["0", "ptmx"]
    assert report["zeros"] == "00000000"
    assert report["full"] == "ENOSPC"
    assert report["shm"] == 0o1777
    status, output = report["sh"]
    assert status == 0 and output.split() == [*sorted(dev), "corral-test"]


def test_masked_paths_read_empty_and_readonly_paths_refuse_writes(scratch: Path) -> None:
    masked, readonly = on_host(DEFAULT_MASKED_PATHS), on_host(DEFAULT_READONLY_PATHS)
    assert any(os.path.isdir(p) for p in masked) and any(os.path.isfile(p) for p in masked)

    def probe() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for path in DEFAULT_MASKED_PATHS:
            if not os.path.lexists(path):
                seen[path] = None
            elif os.path.isdir(path):
                seen[path] = [os.listdir(path), try_write(path + "/x")]
            else:
                with open(path, "rb") as f:
                    rdev = os.stat(path).st_rdev
                    seen[path] = [len(f.read()), os.major(rdev), os.minor(rdev)]
        return {
            "masked": seen,
            "hostname": try_write("/proc/sys/kernel/hostname", create=False),
            "sysrq": try_write("/proc/sysrq-trigger", create=False),
            "irq": try_write("/proc/irq/default_smp_affinity", create=False),
            "mountinfo": read_mounts()["mountinfo"],
        }

    report = in_container(MountSpec(str(build_rootfs(scratch / "rootfs"))), probe)
    for path in DEFAULT_MASKED_PATHS:
        seen = report["masked"][path]
        if path not in masked:
            assert seen is None, path
        elif os.path.isdir(path):
            assert seen == [[], "EROFS"], path
        else:
            assert seen == [0, 1, 3], path  # /dev/null bound over it
    assert report["hostname"] == "EROFS"
    # sysrq-trigger is there only with CONFIG_MAGIC_SYSRQ; opening it for writing is refused
    # by the read-only mount before any byte could reach the kernel.
    assert report["sysrq"] == ("EROFS" if "/proc/sysrq-trigger" in readonly else "ENOENT")
    assert report["irq"] == "EROFS"
    m = by_point(report)
    for path in readonly:
        assert (m[path].fstype, m[path].root, m[path].options[0]) == ("proc", path[5:], "ro")


def test_read_only_root_leaves_dev_shm_proc_and_volumes_writable(scratch: Path) -> None:
    rootfs = build_rootfs(scratch / "rootfs")
    data = scratch / "data"
    data.mkdir()

    def probe() -> dict[str, Any]:
        paths = ("/etc/x", "/tmp/x", "/x", "/dev/x", "/dev/shm/x", "/dev/mqueue", "/data/x")
        return {p: try_write(p) if p != "/dev/mqueue" else os.access(p, os.W_OK) for p in paths}

    spec = MountSpec(str(rootfs), volumes=(Volume(str(data), "/data"),), read_only=True)
    report = in_container(spec, probe)
    # docker mounts no tmpfs on /tmp: under --read-only it is read-only too.
    assert report == {
        "/etc/x": "EROFS",
        "/tmp/x": "EROFS",
        "/x": "EROFS",
        "/dev/x": "ok",
        "/dev/shm/x": "ok",
        "/dev/mqueue": True,
        "/data/x": "ok",
    }
    assert (data / "x").read_text() == "x"
    assert not (rootfs / "etc" / "x").exists()

    writable = in_container(MountSpec(str(rootfs)), lambda: {"etc": try_write("/etc/x")})
    assert writable == {"etc": "ok"} and (rootfs / "etc" / "x").read_text() == "x"


# --- in a user namespace ---


def test_userns_binds_host_device_nodes_and_keeps_locked_flags(scratch: Path) -> None:
    rootfs = build_rootfs(scratch / "rootfs", owner=MAPPED_ROOT)
    data = scratch / "data"
    data.mkdir()

    def host_prepare() -> None:
        # A nosuid,nodev,noexec mount (like the host's /run or /dev/shm): in the user
        # namespace's mount namespace these flags are locked, and a read-only remount of a
        # bind of it that does not repeat them fails with EPERM.
        sc.mount("tmpfs", str(data), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        (data / "file").write_text("from the host\n")

    def probe() -> dict[str, Any]:
        with open("/proc/self/uid_map") as f:
            uid_map = f.read().split()
        with open("/data/file") as f:
            content = f.read()
        return read_mounts() | {
            "dev": describe_dir("/dev"),
            "uid_map": uid_map,
            "data": [content, try_write("/data/x")],
            "etc": try_write("/etc/x"),
            "shm": try_write("/dev/shm/x"),
        }

    volume = Volume(str(data), "/data", read_only=True)
    spec = MountSpec(str(rootfs), volumes=(volume,), read_only=True, userns=True)
    report = in_container(spec, probe, id_count=65536, host_prepare=host_prepare)
    assert report["uid_map"] == ["0", str(MAPPED_ROOT), "65536"]
    m = by_point(report)
    # mknod is not allowed in a user namespace: each node is the host's, bound over a file.
    for name, (major, minor) in {"null": (1, 3), "zero": (1, 5), "tty": (5, 0)}.items():
        assert (m[f"/dev/{name}"].root, m[f"/dev/{name}"].fstype) == (f"/{name}", "devtmpfs")
        assert report["dev"][name][:4] == ["chr", major, minor, 0o666]
    # Owning its net namespace, the user namespace mounts a sysfs of its own.
    assert m["/sys"].fstype == "sysfs" and "ro" in m["/sys"].options
    assert not any(p.startswith("/sys/fs/cgroup/") for p in m)
    assert "/sys/fs/cgroup" in m and m["/sys/fs/cgroup"].fstype == "cgroup2"
    assert report["data"] == ["from the host\n", "EROFS"]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(m["/data"].options)
    assert (report["etc"], report["shm"]) == ("EROFS", "ok")


def test_userns_without_net_ns_or_gid_5_falls_back_like_rootless_runc(scratch: Path) -> None:
    rootfs = build_rootfs(scratch / "rootfs", owner=MAPPED_ROOT)
    host_sys = by_point({"mountinfo": Path("/proc/self/mountinfo").read_text()})["/sys"]

    def probe() -> dict[str, Any]:
        return read_mounts() | {"sys": try_write("/sys/kernel/x"), "id": run_sh("id -u")}

    # One id mapped: gid 5 does not exist in the namespace; the net namespace is the host's,
    # which this user namespace does not own, so sysfs cannot be mounted.
    report = in_container(MountSpec(str(rootfs), userns=True), probe, id_count=1, net=False)
    m = by_point(report)
    assert not any(o.startswith("gid=") for o in m["/dev/pts"].super_options)
    assert {"mode=620", "ptmxmode=666"} <= set(m["/dev/pts"].super_options)
    sys_mounts = [x for x in parse_mountinfo(report["mountinfo"]) if x.mountpoint == "/sys"]
    assert [(x.fstype, x.source) for x in sys_mounts] == [(host_sys.fstype, host_sys.source)]
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(m["/sys"].options)
    under_sys = [x for x in parse_mountinfo(report["mountinfo"]) if x.mountpoint.startswith("/sys")]
    assert all("ro" in x.options for x in under_sys)
    assert report["sys"] == "EROFS"
    assert report["id"] == [0, "0\n"]
