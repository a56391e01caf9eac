"""Each namespace and each hardening step of `corral run`, seen from inside the container
and compared with the host, and escape attempts that must fail.

The container runs a busybox shell script and prints what it sees; the assertions run here.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_container_run import Host, host_fixture, rootfs_fixture  # noqa: F401 - fixtures

from runtime.container.mounts import DEFAULT_MASKED_PATHS
from runtime.container.userns import auto_mapping
from runtime.security.capabilities import DOCKER_DEFAULT, from_mask, parse_status_masks
from runtime.security.process import default_nofile

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def inside(host: Host, rootfs: Path, script: str, *options: str) -> str:
    """stdout of `sh -c SCRIPT` in a new --rm container; the run must succeed."""
    out = host.corral("run", "--rm", *options, str(rootfs), "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    return out.stdout


def namespace_links(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def host_links() -> dict[str, str]:
    return {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}


NS_SCRIPT = "for n in " + " ".join(NAMESPACES) + '; do echo "$n=$(readlink /proc/self/ns/$n)"; done'


# -- namespaces --------------------------------------------------------------------------------


def test_seven_namespaces_differ_with_the_hosts_user_namespace(host: Host, rootfs: Path) -> None:
    theirs, ours = namespace_links(inside(host, rootfs, NS_SCRIPT)), host_links()
    assert set(theirs) == set(NAMESPACES)
    differ = {ns for ns in NAMESPACES if theirs[ns] != ours[ns]}
    assert differ == set(NAMESPACES) - {"user"}


def test_network_host_keeps_the_hosts_network_namespace(host: Host, rootfs: Path) -> None:
    theirs = namespace_links(inside(host, rootfs, NS_SCRIPT, "--network", "host"))
    assert theirs["net"] == host_links()["net"]
    devices = inside(host, rootfs, "cat /proc/net/dev", "--network", "host")
    assert interfaces(devices) == interfaces(Path("/proc/net/dev").read_text())


def interfaces(proc_net_dev: str) -> list[str]:
    return [line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:]]


def test_network_none_has_only_loopback_and_it_is_up(host: Host, rootfs: Path) -> None:
    assert interfaces(inside(host, rootfs, "cat /proc/net/dev")) == ["lo"]
    flags = inside(host, rootfs, "cat /sys/class/net/lo/flags")
    assert int(flags, 16) & 0x1  # IFF_UP


def test_the_command_is_pid_1_and_host_processes_are_invisible(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "tr '\\0' ' ' < /proc/1/cmdline; echo; ls -d /proc/[0-9]*")
    cmdline, *pids = out.splitlines()
    assert cmdline.startswith("sh -c tr")
    assert {int(p.rsplit("/", 1)[1]) for p in pids} <= {1, 2, 3, 4}  # sh, tr/ls and their kin
    assert not Path(f"/proc/{os.getpid()}").is_dir() or f"/proc/{os.getpid()}" not in pids


def test_hostname_defaults_to_the_name_and_can_be_set(host: Host, rootfs: Path) -> None:
    assert inside(host, rootfs, "hostname", "--name", "box1") == "box1\n"
    assert inside(host, rootfs, "hostname; echo $HOSTNAME", "--hostname", "h2") == "h2\nh2\n"
    assert socket.gethostname() not in ("box1", "h2")


def test_uid_map_is_the_hosts_with_userns_host(host: Host, rootfs: Path) -> None:
    assert inside(host, rootfs, "cat /proc/self/uid_map").split() == ["0", "0", "4294967295"]


def test_the_mount_table_holds_only_the_containers_mounts(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "cat /proc/self/mountinfo")
    points = {line.split()[4] for line in out.splitlines()}
    allowed = ("/", "/proc", "/dev", "/sys")
    assert all(p == "/" or p.startswith(allowed[1:]) for p in points), points
    assert {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"} <= points
    assert "/sys/fs/cgroup" in points
    host_only = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    assert not {p for p in host_only if not p.startswith(allowed)} & points


def test_the_cgroup_namespace_shows_the_containers_cgroup_as_root(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "grep '^0::' /proc/self/cgroup; ls /sys/fs/cgroup/cgroup.procs")
    assert out == "0::/\n/sys/fs/cgroup/cgroup.procs\n"


def test_time_offsets_show_in_proc_uptime(host: Host, rootfs: Path) -> None:
    day = 86400
    before = float(Path("/proc/uptime").read_text().split()[0])
    out = inside(host, rootfs, "cat /proc/uptime", "--time-offset", f"boottime={day}")
    after = float(Path("/proc/uptime").read_text().split()[0])
    assert before + day <= float(out.split()[0]) <= after + day


# -- hardening ---------------------------------------------------------------------------------


def test_capabilities_no_new_privs_and_seccomp(host: Host, rootfs: Path) -> None:
    status = parse_status_masks(inside(host, rootfs, "cat /proc/self/status"))
    expected = DOCKER_DEFAULT - {"CAP_MKNOD"}  # no device cgroup: see process.py
    assert from_mask(status["CapBnd"]) == expected
    assert from_mask(status["CapEff"]) == expected
    assert status["CapInh"] == status["CapAmb"] == 0
    flags = inside(host, rootfs, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status")
    assert flags.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]


def test_a_non_root_user_has_no_capabilities(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "id; grep CapEff /proc/self/status", "-u", "1000:1000")
    assert out.splitlines()[0].startswith("uid=1000 gid=1000")
    assert out.split()[-1] == "0000000000000000"


def test_only_stdio_is_open_and_nofile_is_set(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "ls /proc/$$/fd; ulimit -n")
    *fds, nofile = out.split()
    assert sorted(fds) == ["0", "1", "2"]
    assert int(nofile) == default_nofile().soft


def test_environment_workdir_volume_and_read_only(host: Host, rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("from the host\n")
    script = "echo $GREETING; pwd; cat /data/hello; touch /x 2>&1; touch /data/new 2>&1; echo"
    out = inside(
        host, rootfs, script, "-e", "GREETING=hi", "-w", "/srv/app", "--read-only",
        "-v", f"{tmp_path}:/data:ro",
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[:3] == ["hi", "/srv/app", "from the host"]
    assert lines[3:5] == [
        "touch: /x: Read-only file system",
        "touch: /data/new: Read-only file system",
    ]
    assert not (tmp_path / "new").exists()


# -- escape attempts ---------------------------------------------------------------------------


def test_sysrq_trigger_cannot_be_written(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "(echo h > /proc/sysrq-trigger) 2>&1; echo status=$?")
    assert out.endswith("status=1\n")
    # EROFS where the kernel has the file (runc's read-only paths); this host's has none
    if Path("/proc/sysrq-trigger").exists():
        assert "Read-only file system" in out
    else:
        assert "nonexistent directory" in out or "No such file" in out


def test_mount_is_refused(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "mount -t tmpfs none /tmp 2>&1; echo status=$?")
    assert "status=1" in out and "permission denied" in out.lower()


def test_mknod_is_refused(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "mknod /tmp/disk b 8 0 2>&1; echo status=$?")
    assert "status=1" in out and "Operation not permitted" in out


def test_masked_paths_read_empty(host: Host, rootfs: Path) -> None:
    present = [p for p in DEFAULT_MASKED_PATHS if Path(p).exists()]
    assert present, "this host has none of runc's masked paths"
    script = (
        "for p in "
        + " ".join(present)
        + '; do echo "$p $(cat $p 2>/dev/null | wc -c) $(ls $p 2>/dev/null | wc -l)"; done'
    )
    for line in inside(host, rootfs, script).splitlines():
        _, size, entries = line.split()
        assert (size, entries) in (("0", "0"), ("0", "1")), line  # /dev/null or an empty tmpfs


def test_module_loading_is_refused(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "echo x > /tmp/m.ko; busybox insmod /tmp/m.ko 2>&1; echo $?")
    assert "Operation not permitted" in out and out.endswith("1\n")


def test_new_namespaces_are_refused(host: Host, rootfs: Path) -> None:
    out = inside(host, rootfs, "busybox unshare -n true 2>&1; echo status=$?")
    assert "Operation not permitted" in out and "status=1" in out


def test_dropped_capabilities_cannot_be_used(host: Host, rootfs: Path) -> None:
    out = inside(
        host, rootfs, "touch /tmp/f; chown 1 /tmp/f 2>&1; echo chown=$?; "
        "hostname x 2>&1; echo hostname=$?", "--cap-drop", "CHOWN",
    )  # fmt: skip
    assert "chown=1" in out and "hostname=1" in out
    assert inside(host, rootfs, "touch /tmp/f; chown 1 /tmp/f; echo ok") == "ok\n"


# -- --userns auto -----------------------------------------------------------------------------


def test_all_eight_namespaces_differ_with_userns_auto(host: Host, rootfs: Path) -> None:
    theirs, ours = (
        namespace_links(inside(host, rootfs, NS_SCRIPT, "--userns", "auto")),
        host_links(),
    )
    assert {ns for ns in NAMESPACES if theirs[ns] != ours[ns]} == set(NAMESPACES)


def test_userns_auto_maps_root_to_an_unprivileged_range(host: Host, rootfs: Path) -> None:
    mapping = auto_mapping()
    out = inside(
        host, rootfs, "cat /proc/self/uid_map /proc/self/gid_map; id -u", "--userns", "auto"
    )
    uid_line, gid_line, uid = out.splitlines()
    assert uid_line.split() == str(mapping.uids[0]).split() and mapping.uids[0].host > 0
    assert gid_line.split() == str(mapping.gids[0]).split()
    assert uid == "0"


def test_userns_auto_root_writes_the_rootfs_and_volumes_as_the_mapped_uid(
    host: Host, rootfs: Path
) -> None:
    volume = Path(tempfile.mkdtemp(prefix="corral-vol-", dir="/tmp"))
    volume.chmod(0o777)
    name = f"created-{host.marker}"
    try:
        script = f"touch /{name} && touch /data/{name} && echo ok"
        assert inside(host, rootfs, script, "--userns", "auto", "-v", f"{volume}:/data") == "ok\n"
        # the idmapped rootfs stores the container's root as the on-disk owner 0 ...
        assert (rootfs / name).stat().st_uid == 0
        # ... and a plain bind shows the mapped host uid
        assert (volume / name).stat().st_uid == auto_mapping().uids[0].host
    finally:
        (rootfs / name).unlink(missing_ok=True)
        shutil.rmtree(volume)


def test_userns_auto_root_cannot_reach_host_root_powers(host: Host, rootfs: Path) -> None:
    script = "(echo 1 > /proc/sys/kernel/ns_last_pid) 2>&1; mknod /tmp/d b 8 0 2>&1; echo done"
    out = inside(host, rootfs, script, "--userns", "auto")
    assert "Read-only file system" in out or "Permission denied" in out
    assert out.count("Operation not permitted") >= 1 and out.endswith("done\n")


@pytest.mark.parametrize("options", [(), ("--init",)])
def test_no_signal_is_ignored_or_blocked_at_exec(
    host: Host, rootfs: Path, options: tuple[str, ...]
) -> None:
    """Python ignores SIGPIPE and SIGXFSZ; execve would pass that on to the command."""
    argv = ("grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status")  # no shell: ash ignores SIGQUIT
    out = host.corral("run", "--rm", *options, str(rootfs), "--", *argv).stdout
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


def _ignore_signals_as_a_caller_might() -> None:
    """SIG_IGN on SIGINT, SIGUSR1 and 32 (glibc's own, out of Python's reach), as a shell,
    nohup or a supervisor may leave them for the programs it starts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    action = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # handler SIG_IGN, flags, restorer, mask
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(13, 32, ctypes.byref(action), None, 8) == 0  # rt_sigaction


def test_signals_the_caller_ignored_are_at_their_default_in_the_container(
    host: Host, rootfs: Path
) -> None:
    argv = ("grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status")
    done = subprocess.run(
        host.argv("run", "--rm", str(rootfs), "--", *argv),
        env=host.env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_ignore_signals_as_a_caller_might,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]
