"""An OCI container follows its config.json: read back from the kernel (/proc/PID/status,
limits, ns/, mountinfo, uid_map, timens_offsets) of the created PID 1, which is fully set up
and waiting before execve, or from what the started command prints.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from test_container_run import (  # noqa: F401 - fixtures
    Host,
    host_fixture,
    nothing_left,
    rootfs_fixture,
    wait_for,
)
from test_oci_lifecycle import (  # noqa: F401 - fixtures
    Config,
    bundles_fixture,
    created,
    log_lines,
    make_bundle,
    oci,
    state,
    store_state,
)

from monitor.naming import Namer
from runtime.oci.init_process import environment
from runtime.security.capabilities import to_mask

NS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def new_namespaces(pid: int) -> set[str]:
    return {
        n for n in NS if os.readlink(f"/proc/{pid}/ns/{n}") != os.readlink(f"/proc/self/ns/{n}")
    }


def mounts_of(pid: int) -> dict[str, tuple[str, str, str]]:
    """mount point -> (per-mount options, fstype, super options), the last mount wins."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        parts, (fstype, _, sb) = fields.split(), rest.split()
        found[parts[4]] = (parts[5], fstype, sb)
    return found


def run_to_end(host: Host, bundle: Path, cid: str) -> list[str]:
    created(host, bundle, cid)
    assert oci(host, "start", cid).returncode == 0
    wait_for(lambda: state(host, cid)["status"] == "stopped", f"{cid} to stop")
    lines = log_lines(host, cid)
    assert oci(host, "delete", cid).returncode == 0
    return lines


def test_process_fields_are_applied_before_execve(host: Host, rootfs: Path, bundles: Path) -> None:
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]

    def change(config: Config) -> None:
        process = config["process"]
        process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 7], "umask": 0o027}
        process["capabilities"] = {k: caps for k in ("bounding", "permitted", "inheritable")}
        process["capabilities"]["effective"] = ["CAP_KILL"]
        process["capabilities"]["ambient"] = ["CAP_NET_BIND_SERVICE"]
        process["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
        ]
        process["cwd"] = "/tmp/work"

    bundle = make_bundle(bundles, rootfs, host, "pf", ["sleep", host.marker], change)
    with nothing_left(host):
        pid = created(host, bundle, "pf")["pid"]
        s = status(pid)
        assert s["Uid"].split() == ["1000"] * 4 and s["Gid"].split() == ["1001"] * 4
        assert s["Groups"].split() == ["5", "7"] and s["Umask"] == "0027"
        assert int(s["CapBnd"], 16) == to_mask(caps) == int(s["CapPrm"], 16)
        assert int(s["CapInh"], 16) == to_mask(caps)
        assert int(s["CapEff"], 16) == to_mask(["CAP_KILL"])
        assert int(s["CapAmb"], 16) == to_mask(["CAP_NET_BIND_SERVICE"])
        assert s["NoNewPrivs"] == "1"
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert re.search(r"Max open files\s+512\s+2048", limits)
        assert re.search(r"Max processes\s+300\s+400", limits)
        assert os.readlink(f"/proc/{pid}/cwd") == "/tmp/work"
        assert oci(host, "delete", "pf").returncode == 0


def test_runc_spec_defaults_and_no_new_privileges_false(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    """runc spec's ambient set is outside its (empty) inheritable set: left out, as runc."""

    def change(config: Config) -> None:
        config["process"]["noNewPrivileges"] = False

    script = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"
    bundle = make_bundle(bundles, rootfs, host, "nn", ["sh", "-c", script], change)
    with nothing_left(host):
        pid = created(host, bundle, "nn")["pid"]
        s = status(pid)
        spec_caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        assert int(s["CapEff"], 16) == to_mask(spec_caps) and int(s["CapAmb"], 16) == 0
        assert s["NoNewPrivs"] == "0" and s["Seccomp"] == "2"  # installed before the drop
        assert new_namespaces(pid) == {"ipc", "mnt", "net", "pid", "uts"}
        assert re.search(r"Max open files\s+1024\s+1024", Path(f"/proc/{pid}/limits").read_text())
        assert oci(host, "start", "nn").returncode == 0
        wait_for(lambda: state(host, "nn")["status"] == "stopped", "nn to stop")
        assert log_lines(host, "nn") == ["NoNewPrivs:\t0\n", "Seccomp:\t2\n"]
        assert oci(host, "delete", "nn").returncode == 0


def test_mounts_masked_and_readonly_paths_follow_the_config(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    data = bundles / "data"
    data.mkdir()
    (data / "file").write_text("bound\n")

    def change(config: Config) -> None:
        config["mounts"] += [
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "noexec", "size=1m", "mode=700"]},
            {"destination": "/data", "type": "bind", "source": str(data),
             "options": ["bind", "ro", "nodev"]},
        ]  # fmt: skip
        config["linux"]["maskedPaths"] = ["/proc/timer_list", "/sys/firmware"]
        config["linux"]["readonlyPaths"] = ["/proc/sys"]

    bundle = make_bundle(bundles, rootfs, host, "mt", ["cat", "/data/file"], change)
    with nothing_left(host):
        pid = created(host, bundle, "mt")["pid"]
        mounts = mounts_of(pid)
        assert mounts["/"][0].startswith("ro,")  # root.readonly in runc spec
        options, fstype, sb = mounts["/scratch"]
        assert fstype == "tmpfs" and {"nosuid", "noexec"} <= set(options.split(","))
        assert "size=1024k" in sb and "mode=700" in sb
        options, _, _ = mounts["/data"]
        assert {"ro", "nodev"} <= set(options.split(","))
        assert mounts["/proc/sys"][0].startswith("ro,")
        assert mounts["/proc/timer_list"][1] == "tmpfs"  # /dev/null of the /dev tmpfs
        assert mounts["/sys/firmware"][1] == "tmpfs"
        assert "/proc/acpi" not in mounts  # only the config's masked paths
        assert mounts["/sys/fs/cgroup"][1] == "cgroup2"
        assert mounts["/dev/pts"][1] == "devpts" and "gid=5" in mounts["/dev/pts"][2]
        assert oci(host, "start", "mt").returncode == 0
        wait_for(lambda: state(host, "mt")["status"] == "stopped", "mt to stop")
        assert log_lines(host, "mt") == ["bound\n"]
        assert oci(host, "delete", "mt").returncode == 0


def test_hostname_env_args_cwd_sysctl(host: Host, rootfs: Path, bundles: Path) -> None:
    def change(config: Config) -> None:
        config["hostname"] = "oci-host"
        config["process"]["env"] = ["PATH=/bin", "ONLY=this"]
        config["process"]["cwd"] = "/etc"
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}

    # HOME comes from the rootfs's /etc/passwd when the config has none, as runc adds it.
    script = "hostname; env | sort; pwd; cat /proc/sys/net/ipv4/ip_forward"
    bundle = make_bundle(bundles, rootfs, host, "hn", ["sh", "-c", script], change)
    with nothing_left(host):
        lines = run_to_end(host, bundle, "hn")
    assert lines[0] == "oci-host\n" and lines[-2:] == ["/etc\n", "1\n"]
    assert [line for line in lines if "=" in line and not line.startswith("PWD=")] == [
        "HOME=/root\n", "ONLY=this\n", "PATH=/bin\n", "SHLVL=1\n"
    ]  # fmt: skip


def test_user_cgroup_and_time_namespaces_with_mappings_and_offsets(
    host: Host, rootfs: Path, bundles: Path
) -> None:
    def change(config: Config) -> None:
        linux = config["linux"]
        linux["namespaces"] += [{"type": "user"}, {"type": "cgroup"}, {"type": "time"}]
        linux["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 65536}]
        linux["timeOffsets"] = {"monotonic": {"secs": 86400, "nanosecs": 0}}
        config["process"]["user"]["additionalGids"] = [5]  # setgroups(2) stays allowed

    bundle = make_bundle(bundles, rootfs, host, "un", ["id"], change)
    with nothing_left(host):
        pid = created(host, bundle, "un")["pid"]
        assert new_namespaces(pid) == set(NS)
        uid_map = Path(f"/proc/{pid}/uid_map").read_text().split()
        assert uid_map == ["0", "200000", "65536"]
        assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", "300000", "65536"]
        offsets = Path(f"/proc/{pid}/timens_offsets").read_text()
        assert re.search(r"monotonic\s+86400\s+0", offsets)
        s = status(pid)
        assert s["Uid"].split() == ["200000"] * 4  # the container's root, as the host sees it
        assert s["Groups"].split() == ["300005"]
        assert oci(host, "start", "un").returncode == 0
        wait_for(lambda: state(host, "un")["status"] == "stopped", "un to stop")
        assert log_lines(host, "un")[0].startswith("uid=0(root) gid=0(root)")
        assert oci(host, "delete", "un").returncode == 0


def test_namespaces_joined_by_path(host: Host, rootfs: Path, bundles: Path) -> None:
    first = make_bundle(bundles, rootfs, host, "first", ["sleep", host.marker])
    with nothing_left(host):
        owner = created(host, first, "first")["pid"]

        def join(config: Config) -> None:
            config["hostname"] = None
            config["linux"]["namespaces"] = [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                {"type": "network", "path": f"/proc/{owner}/ns/net"},
                {"type": "uts", "path": f"/proc/{owner}/ns/uts"},
            ]  # fmt: skip

        second = make_bundle(bundles, rootfs, host, "second", ["hostname"], join)
        pid = created(host, second, "second")["pid"]
        for kind in ("net", "uts"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/{owner}/ns/{kind}")
        for kind in ("ipc", "pid", "mnt"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/{owner}/ns/{kind}")
        assert oci(host, "start", "second").returncode == 0
        wait_for(lambda: state(host, "second")["status"] == "stopped", "second to stop")
        assert log_lines(host, "second") == ["runc\n"]  # the first container's hostname
        for cid in ("second", "first"):
            assert oci(host, "delete", "--force", cid).returncode == 0


def test_the_monitor_names_an_oci_container(host: Host, rootfs: Path, bundles: Path) -> None:
    def annotate(config: Config) -> None:
        config["annotations"] = {"team": "oci"}

    bundle = make_bundle(bundles, rootfs, host, "named", ["true"], annotate)
    with nothing_left(host):
        created(host, bundle, "named")
        stored: dict[str, Any] = store_state(host, "named")
        name = Namer(host.state_dir).name(f"{host.parent}/named")
        assert (name.kind, name.name, name.id) == ("container", "named", stored["id"])
        assert name.labels == {"team": "oci"}
        assert state(host, "named")["annotations"] == {"team": "oci"}
        assert oci(host, "delete", "named").returncode == 0


def test_a_user_namespace_joined_by_path(host: Host, rootfs: Path, bundles: Path) -> None:
    """Another container's user namespace (and the network namespace it owns), listed last:
    the process takes that namespace's mappings, and the namespaces it creates (mount, pid,
    cgroup: /sys/fs/cgroup can only be mounted in a cgroup namespace it owns) belong to it."""

    def owner_config(config: Config) -> None:
        config["linux"]["namespaces"] += [{"type": "user"}, {"type": "cgroup"}]
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]

    first = make_bundle(bundles, rootfs, host, "uowner", ["sleep", host.marker], owner_config)
    with nothing_left(host):
        owner = created(host, first, "uowner")["pid"]

        def join(config: Config) -> None:
            config["hostname"] = None
            config["linux"]["namespaces"] = [
                {"type": "network", "path": f"/proc/{owner}/ns/net"},
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "cgroup"}, {"type": "user", "path": f"/proc/{owner}/ns/user"},
            ]  # fmt: skip

        second = make_bundle(bundles, rootfs, host, "ujoin", ["id", "-u"], join)
        pid = created(host, second, "ujoin")["pid"]
        for kind in ("user", "net"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/{owner}/ns/{kind}")
        assert status(pid)["Uid"].split() == ["200000"] * 4
        assert oci(host, "start", "ujoin").returncode == 0
        wait_for(lambda: state(host, "ujoin")["status"] == "stopped", "ujoin to stop")
        assert log_lines(host, "ujoin") == ["0\n"]
        for cid in ("ujoin", "uowner"):
            assert oci(host, "delete", "--force", cid).returncode == 0


# -- HOME, as runc and crun set it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "uid", "home"),
    [
        ((), 0, "/root"),  # from the container's /etc/passwd
        ((), 1000, "/home/app"),
        ((), 4242, "/"),  # not listed: "/"
        (("HOME=/data",), 0, "/data"),  # given: kept as is
    ],
)
def test_home_comes_from_the_containers_passwd_unless_given(
    tmp_path: Path, env: tuple[str, ...], uid: int, home: str
) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    assert environment(("PATH=/bin", *env), uid, str(passwd)) == {"PATH": "/bin", "HOME": home}
