"""corral doctor: parsers on captured mountinfo, diagnose() on probe results for each layout,
the probes and the command against this real (hybrid) host."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main
from runtime import syscalls
from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.mounts import cgroup_layout, cgroup_mounts, parse_mountinfo
from runtime.doctor import Facts, diagnose, gather
from runtime.doctor.namespaces import (
    NsResult,
    UsernsLimits,
    _wait_child,
    parse_subid,
    probe_namespaces,
    read_userns_limits,
    try_unshare,
)
from runtime.doctor.probes import (
    Controllers,
    CpuStat,
    Kernel,
    Privileges,
    Psi,
    parse_cap_eff,
    read_controllers,
    read_cpu_stat,
    read_psi,
)
from runtime.machine.requirements import Requirements

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
HYBRID = (FIXTURES / "mountinfo-hybrid.txt").read_text()
UNIFIED = (FIXTURES / "mountinfo-unified.txt").read_text()
# Written by hand (no v1-only host was at hand): the shape of a systemd "legacy" boot.
LEGACY = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/systemd rw,nosuid shared:9 - cgroup cgroup rw,xattr,name=systemd
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:10 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory
35 31 0:32 / /sys/fs/cgroup/blkio rw shared:12 - cgroup cgroup rw,blkio
36 31 0:33 / /sys/fs/cgroup/pids rw shared:13 - cgroup cgroup rw,pids
37 31 0:34 / /sys/fs/cgroup/cpuset rw shared:14 - cgroup cgroup rw,cpuset,clone_children
"""
ALL_V2 = ("cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma")
MEMORY_DISABLES = [
    "memory limits (--memory, --memory-high, memory_pressure and oom_guard policies)",
    "memory figures (memory.current, memory.stat, memory.events, working set)",
]
IO_DISABLES = ["io limits (--device-*-bps/iops, io_pressure policy)", "io.stat figures"]
PIDS_DISABLES = ["--pids-limit", "pids_guard", "pids.current/pids.events"]
CPU_DISABLES = ["cpu.max/cpu.weight limits", "throttling figures", "cpu_quota policy"]

# -- mountinfo and layout ------------------------------------------------------------------


def test_hybrid_capture_is_hybrid_with_each_v1_controller_and_its_mount() -> None:
    layout = cgroup_layout(parse_mountinfo(HYBRID))
    assert layout.kind == "hybrid"
    assert layout.cgroup2_mount == "/sys/fs/cgroup/unified"
    names = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"]
    assert layout.v1_controllers == {n: f"/sys/fs/cgroup/{n}" for n in names}
    assert layout.v1_mounts_of("io") == {"blkio": "/sys/fs/cgroup/blkio"}
    assert layout.v1_mounts_of("cpu") == {
        "cpu": "/sys/fs/cgroup/cpu",
        "cpuacct": "/sys/fs/cgroup/cpuacct",
    }
    assert layout.v1_mounts_of("hugetlb") == {}


def test_unified_capture_is_unified() -> None:
    mounts = parse_mountinfo(UNIFIED)
    layout = cgroup_layout(mounts)
    assert (layout.kind, layout.cgroup2_mount, layout.v1_controllers) == (
        "unified",
        "/sys/fs/cgroup",
        {},
    )
    assert [m.mountpoint for m in cgroup_mounts(mounts)] == ["/sys/fs/cgroup"]
    root = next(m for m in mounts if m.mountpoint == "/")
    assert (root.fstype, root.source, root.options[0]) == ("9p", "/dev/root", "ro")


def test_legacy_text_with_optional_fields_and_joined_controllers() -> None:
    layout = cgroup_layout(parse_mountinfo(LEGACY))
    assert layout.kind == "legacy" and layout.cgroup2_mount is None
    assert layout.v1_controllers["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert "name=systemd" not in layout.v1_controllers
    assert "clone_children" not in layout.v1_controllers


def test_no_cgroup_mount_at_all_and_preferred_cgroup2_mount() -> None:
    assert cgroup_layout(parse_mountinfo("1 0 0:1 / /proc rw - proc proc rw\n")).kind == "none"
    two = (
        "40 30 0:38 /kubepods /host/cg rw - cgroup2 cgroup2 rw\n"
        "41 30 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    assert cgroup_layout(parse_mountinfo(two)).cgroup2_mount == "/sys/fs/cgroup"


def test_mountinfo_unescapes_paths_and_rejects_garbage() -> None:
    line = r"50 27 0:60 /a\040b /mnt/my\040dir rw,relatime shared:3 master:1 - tmpfs x rw"
    (mount,) = parse_mountinfo(line)
    assert (mount.root, mount.mountpoint, mount.fstype) == ("/a b", "/mnt/my dir", "tmpfs")
    with pytest.raises(ValueError, match="cannot parse 'not a mountinfo line'"):
        parse_mountinfo("not a mountinfo line")


# -- diagnose() on probe results -------------------------------------------------------------

READY = Requirements(
    qemu="/usr/bin/qemu-system-x86_64",
    kernel="/boot/vmlinuz-6.1.0-56-amd64",
    vng="/v/vng",
    kvm_usable=False,
    kvm_detail="/dev/kvm exists but qemu under KVM fails here",
)


def facts_for(mountinfo: str, available: tuple[str, ...], **changes: object) -> Facts:
    layout = cgroup_layout(parse_mountinfo(mountinfo))
    root = layout.cgroup2_mount
    facts = Facts(
        kernel=Kernel("6.1.0-56-amd64", "x86_64", ()),
        mounts=cgroup_mounts(parse_mountinfo(mountinfo)),
        layout=layout,
        cgroup_root=root,
        root=Controllers(root, True, available, available) if root else None,
        parent_name="corral",
        parent=Controllers(f"{root}/corral", False) if root else None,
        cpu_stat=CpuStat(f"{root}/cpu.stat", True) if root else None,
        psi=Psi({r: True for r in ("cpu", "memory", "io")}, {r: True for r in ("cpu", "io")}),
        namespaces={name: NsResult(True) for name in syscalls.NAMESPACE_FLAGS},
        userns=UsernsLimits(15000, None, None, "root", (), ()),
        privileges=Privileges(0, 1 << 21, True),
        machine=READY,
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def by_name(facts: Facts) -> dict[str, tuple[str, list[str]]]:
    return {c.name: (c.status, c.disables) for c in diagnose(facts).checks}


def test_hybrid_names_each_lost_controller_and_what_it_disables() -> None:
    facts = facts_for(HYBRID, ("hugetlb",))
    report = diagnose(facts, corral=".venv/bin/corral")
    checks = {c.name: c for c in report.checks}
    assert checks["memory"].disables == MEMORY_DISABLES
    assert checks["io"].disables == IO_DISABLES
    assert checks["pids"].disables == PIDS_DISABLES
    assert checks["cpu"].disables == CPU_DISABLES
    assert checks["cpuset"].disables == ["--cpuset-cpus"]
    assert {checks[c].status for c in ("memory", "io", "pids", "cpu", "cpuset")} == {"missing"}
    assert "bound to cgroup v1 at /sys/fs/cgroup/blkio" in checks["io"].detail
    assert "cpu.stat usage and PSI still work without it" in checks["cpu"].detail
    assert checks["memory"].fix.startswith("boot with cgroup_no_v1=memory, or remove")
    assert checks["layout"].status == "degraded"
    assert "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" in checks["layout"].fix
    assert "`.venv/bin/corral machine run -- .venv/bin/corral doctor`" in checks["layout"].fix
    assert checks["cpu.stat usage"].status == checks["psi"].status == "ok"
    assert (checks["machine"].status, checks["kvm"].status) == ("ok", "info")
    assert report.summary == (
        "cgroup v2 hybrid; cpu.stat usage and PSI available; memory, io and pids limits and "
        "stats unavailable (and cpu limits and --cpuset-cpus, since cpu and cpuset are v1 "
        "controllers here); all eight namespaces work; full cgroup v2 in `corral machine run`"
    )
    assert report.degraded and report.exit_code == 1


def test_unified_with_everything_exits_0_even_without_parent_machine_or_kvm() -> None:
    no_machine = Requirements(None, None, None, kvm_usable=False, kvm_detail="no /dev/kvm")
    report = diagnose(facts_for(UNIFIED, ALL_V2, machine=no_machine))
    assert [c.name for c in report.checks if c.problem] == []
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["parent"] == statuses["machine"] == statuses["kvm"] == "info"
    assert report.summary == (
        "cgroup v2 unified; controllers cpu memory io pids cpuset, cpu.stat usage and PSI "
        "available; all eight namespaces work"
    )
    assert (report.degraded, report.exit_code) == (False, 0)


def test_legacy_loses_every_controller_and_points_at_the_machine() -> None:
    report = diagnose(facts_for(LEGACY, ()))
    checks = {c.name: c for c in report.checks}
    assert checks["layout"].status == "missing"
    assert checks["memory"].disables == MEMORY_DISABLES
    assert checks["pids"].disables == PIDS_DISABLES
    assert {checks[c].status for c in ("cpu", "memory", "io", "pids", "cpuset")} == {"missing"}
    assert checks["cpu.stat usage"].status == "missing"
    assert "machine run" in checks["layout"].fix
    assert report.summary.startswith("cgroup v1 only (legacy); PSI available; memory, io and")
    assert report.exit_code == 1


def test_hybrid_without_the_machine_says_how_to_set_it_up() -> None:
    missing = Requirements(None, "/boot/vmlinuz", "/v/vng", kvm_usable=False, kvm_detail="-")
    checks = {c.name: c for c in diagnose(facts_for(HYBRID, ("hugetlb",), machine=missing)).checks}
    assert checks["machine"].status == "missing"
    assert checks["machine"].fix.startswith("corral machine setup (installs qemu-system-x86")


def test_a_failed_namespace_disables_its_features_and_degrades() -> None:
    namespaces = {n: NsResult(True) for n in syscalls.NAMESPACE_FLAGS}
    namespaces["user"] = NsResult(False, "ENOSPC")
    namespaces["time"] = NsResult(False, "EINVAL")
    report = diagnose(facts_for(UNIFIED, ALL_V2, namespaces=namespaces))
    checks = {c.name: c for c in report.checks}
    assert checks["user"].status == "missing"
    assert checks["user"].disables[1] == "rootless containers"
    assert checks["user"].fix == "raise the limit: sysctl -w user.max_user_namespaces=15000"
    assert "CONFIG_TIME_NS" in checks["time"].fix
    assert "user and time namespaces unavailable" in report.summary
    assert report.exit_code == 1


def test_psi_disabled_on_the_command_line_is_named_with_its_fix() -> None:
    error = "/proc/pressure/cpu: EOPNOTSUPP: PSI is disabled (psi=0 on the kernel command line)"
    psi = Psi({"cpu": False, "memory": False, "io": False}, {}, error)
    checks = {c.name: c for c in diagnose(facts_for(UNIFIED, ALL_V2, psi=psi)).checks}
    assert checks["psi"].status == "missing"
    assert "memory_pressure and io_pressure policies" in checks["psi"].disables
    assert checks["psi"].fix.startswith("remove psi=0 from the kernel command line")


def test_unprivileged_user_is_degraded_and_cgroup_disable_is_named() -> None:
    kernel = Kernel("6.1.0", "x86_64", ("cgroup_disable=memory",))
    available = tuple(c for c in ALL_V2 if c != "memory")
    facts = facts_for(UNIFIED, available, kernel=kernel, privileges=Privileges(1000, 0, False))
    checks = {c.name: c for c in diagnose(facts).checks}
    assert checks["privileges"].status == "degraded"
    assert checks["memory"].detail.startswith("disabled by cgroup_disable=memory")
    assert checks["subuid"].fix.startswith("usermod --add-subuids")


# -- probes on this real host ----------------------------------------------------------------


def test_every_namespace_really_unshares_here() -> None:
    results = probe_namespaces()
    assert list(results) == list(syscalls.NAMESPACE_FLAGS)
    assert {n: r.error for n, r in results.items() if not r.ok} == {}


def test_unshare_errors_come_back_as_errno_names_and_hangs_time_out() -> None:
    assert try_unshare(0x1) == "EINVAL"  # not a namespace flag: the kernel refuses it
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        time.sleep(30)
        os._exit(0)
    started = time.monotonic()
    assert _wait_child(pid, 0.2) == "timed out after 0.2s"
    assert time.monotonic() - started < 5


def test_psi_cpu_stat_and_controllers_of_this_hosts_cgroup2() -> None:
    root = cgroup_layout(parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    assert root.cgroup2_mount is not None
    fs = CgroupFS(root.cgroup2_mount)
    assert read_psi(fs).available
    assert read_cpu_stat(fs).usage
    assert read_controllers(fs, "").exists
    assert read_controllers(fs, "corral-doctor-no-such-cgroup") == Controllers(
        f"{root.cgroup2_mount}/corral-doctor-no-such-cgroup", False
    )


def test_missing_pressure_files_say_enoent(tmp_path: Path) -> None:
    psi = read_psi(None, proc_pressure=str(tmp_path))
    assert not psi.available
    assert psi.error is not None and "ENOENT: the kernel is built without CONFIG_PSI" in psi.error


def test_cap_eff_and_subid_parsers() -> None:
    assert parse_cap_eff(Path("/proc/self/status").read_text()) >> 21 & 1 == (os.geteuid() == 0)
    assert parse_cap_eff("Name:\tx\nCapEff:\t0000000000200000\n") == 1 << 21
    text = "# comment\nalice:100000:65536\n1000:200000:10\nbob:1:2\nbroken\n"
    assert parse_subid(text, "alice", 1000) == ((100000, 65536), (200000, 10))
    assert parse_subid(text, "carol", 1001) == ()


def test_userns_limits_read_from_given_directories(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "kernel").mkdir()
    (tmp_path / "user" / "max_user_namespaces").write_text("0\n")
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("1\n")
    (tmp_path / "subuid").write_text("root:100000:65536\n")
    limits = read_userns_limits(proc_sys=str(tmp_path), etc=str(tmp_path), uid=0)
    assert (limits.max_user_namespaces, limits.unprivileged_userns_clone) == (0, 1)
    assert (limits.apparmor_restrict, limits.subuid, limits.subgid) == (
        None,
        ((100000, 65536),),
        (),
    )


def test_gather_reads_an_existing_parent_from_a_given_root(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    (tmp_path / "corral").mkdir()
    (tmp_path / "corral" / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "corral" / "cgroup.subtree_control").write_text("memory\n")
    facts = gather(str(tmp_path), "corral", verify=False, check_kvm=False)
    assert facts.parent == Controllers(
        str(tmp_path / "corral"), True, ("cpu", "memory"), ("memory",)
    )
    parent = next(c for c in diagnose(facts).checks if c.name == "parent")
    assert parent.status == "info" and "corral enables cpu io pids when it starts" in parent.detail


# -- the command on this host ----------------------------------------------------------------


def test_doctor_text_on_this_hybrid_host() -> None:
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1, result.output
    assert "hybrid: cgroup2 at /sys/fs/cgroup/unified" in result.output
    summary = " ".join(result.output.split("summary: ", 1)[1].split())
    assert summary.startswith(
        "cgroup v2 hybrid; cpu.stat usage and PSI available; "
        "memory, io and pids limits and stats unavailable (and cpu limits"
    )
    assert "✓ all eight       user pid net mnt ipc uts cgroup time" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_doctor_json_on_this_hybrid_host() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "doctor", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["layout"]["kind"] == "hybrid" and data["degraded"] is True
    assert data["cpu_stat"]["usage"] is True and data["psi"]["available"] is True
    root = data["controllers"]["root"]
    assert {"memory", "io", "pids"}.isdisjoint(root["available"])
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert [status[c] for c in ("memory", "io", "pids")] == ["missing"] * 3
    assert status["cpu.stat usage"] == status["psi"] == "ok"
    assert data["namespaces"] == {
        n: {"ok": True, "error": None, "with_userns": False} for n in syscalls.NAMESPACE_FLAGS
    }
    assert data["controllers"]["parent"]["name"] == "corral"


def test_doctor_rejects_a_cgroup_root_that_is_not_cgroup2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["doctor", "--cgroup-root", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path} is not a cgroup2 mount" in result.output
    result = CliRunner().invoke(main, ["doctor", "--parent", "../etc"])
    assert result.exit_code == 2 and "'..' is not allowed" in result.output
