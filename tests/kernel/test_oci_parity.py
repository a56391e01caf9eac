"""The same OCI bundle under runc, crun and corral on a real cgroup v2 kernel (inside
`corral machine`): exit statuses (0, 3, death by SIGKILL), stdout, hostname, environment,
the process's credentials and limits, the mount list inside (/proc/self/mountinfo: mount
points, fs types, access flags, tmpfs/devpts options), the namespaces that are new, the cgroup
limits the kernel holds for linux.resources, and the behaviour when the memory limit is
exceeded (SIGKILL, memory.events oom_kill) and when the pids limit is reached (fork fails
with EAGAIN, pids.events max).

The bundle is `runc spec` over a busybox rootfs (tools/make_bundle.py) plus a /sync bind
mount, a hostname and linux.cgroupsPath; each runtime runs it with its foreground verb
(oci_harness.py says how).

Accepted differences, each asserted as such:
- seccomp (test_credentials_and_limits): with no linux.seccomp in the bundle, runc and crun
  install no filter; corral installs its own default profile (runtime/oci/config.py refuses
  linux.seccomp and says so), so /proc/self/status shows Seccomp 2 under corral only.

crun's mounts differ from runc's (test_crun_mounts_differ_from_runc_only_as_accepted; corral
follows runc, and is compared with runc exactly):
- maskedPaths: runc masks a file by bind-mounting the container's own /dev/null (a mount of
  the container's /dev tmpfs, "nosuid,rw") and a directory with a new read-only tmpfs; crun
  bind-mounts the host's /dev/null read-only (devtmpfs) and mounts a "size=0k" tmpfs
  read-only per mount. Either way the path shows nothing.
- Order: crun mounts maskedPaths before readonlyPaths, runc after.
- /sys: runc mounts sysfs read-only at the super block (sb:ro); crun read-only per mount
  over a read-write super block. Either way the container cannot write it.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from oci_harness import (
    RUNTIMES,
    Bundles,
    Config,
    Outcome,
    container_init,
    finish,
    flat_keyed,
    host_namespaces,
    new_namespaces,
    normalize_mountinfo,
    same,
)

from runtime.cgroupfs import CgroupFS
from runtime.cgroupfs.io import Device

MiB = 1 << 20
# linux.namespaces types as /proc/self/ns names them (`runc spec` adds cgroup on cgroup v2).
NS_ENTRIES = {"pid": ("pid", "pid_for_children"), "network": ("net",), "mount": ("mnt",),
              "ipc": ("ipc",), "uts": ("uts",), "user": ("user",), "cgroup": ("cgroup",),
              "time": ("time", "time_for_children")}  # fmt: skip
STATUS_KEYS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
               "NoNewPrivs", "Seccomp")  # fmt: skip
PROBE = r"""
echo "hostname $(hostname)"
for n in /proc/self/ns/*; do echo "ns ${n##*/} $(readlink $n)"; done
sed 's/^/mnt /' /proc/self/mountinfo
env | sort | sed 's/^/env /'
sed -n 's/^\([A-Za-z]*\):[[:space:]]*/status \1 /p' /proc/self/status
echo "limits nofile $(ulimit -n) cwd $(pwd) umask $(umask)"
echo "stdout line with  two  spaces and a tab	here"
"""


@pytest.fixture(scope="module")
def bundles() -> Iterator[Bundles]:
    base = Path(tempfile.mkdtemp(prefix="corral-oci-parity-", dir="/tmp"))
    yield Bundles.make(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def probe(bundles: Bundles) -> dict[str, Outcome]:
    """One run of PROBE under each runtime, shared by the tests of what a container sees."""
    outcomes = bundles.run_all("probe", ["sh", "-c", PROBE])
    for outcome in outcomes.values():
        assert (outcome.status, outcome.stderr) == (0, ""), outcome.describe()
    return outcomes


@pytest.mark.parametrize(("script", "status"), [("true", 0), ("exit 3", 3)])
def test_exit_status_and_stdout(bundles: Bundles, script: str, status: int) -> None:
    outcomes = bundles.run_all(f"exit{status}", ["sh", "-c", f"echo out-{status}; {script}"])
    assert same("exit status", {rt: o.status for rt, o in outcomes.items()}) == status
    assert same("stdout", {rt: o.stdout for rt, o in outcomes.items()}) == f"out-{status}\n"


def test_sigkill_death_exits_137(bundles: Bundles) -> None:
    """PID 1 killed from the host (the kernel drops SIGKILL sent to a pid namespace's init
    from inside it): every runtime exits 128 + 9."""
    statuses = {}
    for runtime in RUNTIMES:
        with bundles.held(runtime, "sigkill", "") as held:
            os.kill(container_init(held.cgroup), signal.SIGKILL)
            statuses[runtime] = finish(runtime, held.proc).status
    assert same("exit status after SIGKILL", statuses) == 128 + signal.SIGKILL


def test_hostname_and_stdout_bytes(probe: dict[str, Outcome]) -> None:
    assert same("hostname", {rt: o.lines("hostname") for rt, o in probe.items()}) == ["parity"]
    last = same("last stdout line", {rt: o.stdout.splitlines()[-1] for rt, o in probe.items()})
    assert last == "stdout line with  two  spaces and a tab\there"


def test_new_namespaces_are_the_ones_asked_for(probe: dict[str, Outcome], bundles: Bundles) -> None:
    host = host_namespaces()
    found = {rt: new_namespaces(o.lines("ns"), host) for rt, o in probe.items()}
    asked = {e for ns in bundles.template["linux"]["namespaces"] for e in NS_ENTRIES[ns["type"]]}
    assert same("new namespaces", found) == asked


def test_environment_has_home_from_passwd(probe: dict[str, Outcome]) -> None:
    """process.env plus HOME: runc and crun add HOME from the rootfs's /etc/passwd entry of
    process.user.uid when process.env has none (root: /root)."""
    env = same("environment", {rt: o.lines("env") for rt, o in probe.items()})
    assert "HOME=/root" in env


def test_credentials_and_limits(probe: dict[str, Outcome]) -> None:
    """uid/gid/groups, the five capability sets, no_new_privs, RLIMIT_NOFILE, cwd and umask
    the same; seccomp as accepted (module docstring): no filter under runc and crun (the
    bundle has no linux.seccomp), corral's default filter (Seccomp 2, filter mode)."""
    status = {rt: [s for s in o.lines("status") if s.split()[0] in STATUS_KEYS]
              for rt, o in probe.items()}  # fmt: skip
    seccomp = {rt: [s for s in lines if s.startswith("Seccomp ")] for rt, lines in status.items()}
    assert seccomp == {"runc": ["Seccomp 0"], "crun": ["Seccomp 0"], "corral": ["Seccomp 2"]}
    others = {rt: [s for s in lines if not s.startswith("Seccomp ")]
              for rt, lines in status.items()}  # fmt: skip
    assert "NoNewPrivs 1" in same("/proc/self/status credentials", others)
    limits = same("nofile, cwd, umask", {rt: o.lines("limits") for rt, o in probe.items()})
    assert limits == ["nofile 1024 cwd / umask 0022"]


def test_corral_mounts_are_runcs(probe: dict[str, Outcome]) -> None:
    found = {rt: normalize_mountinfo(probe[rt].lines("mnt")) for rt in ("runc", "corral")}
    same("mount list inside (mount order)", found)


def test_crun_mounts_differ_from_runc_only_as_accepted(
    probe: dict[str, Outcome], bundles: Bundles
) -> None:
    """The accepted differences of the module docstring, and nothing else."""
    masked = set(bundles.template["linux"]["maskedPaths"])
    runc, crun = (normalize_mountinfo(probe[rt].lines("mnt")) for rt in ("runc", "crun"))
    differing = {m[0] for m in set(runc) ^ set(crun)}
    assert differing <= masked | {"/sys"}, f"unexpected: {differing - masked - {'/sys'}}"

    def accepted(mounts: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        def one(m: tuple[str, str, str]) -> tuple[str, str, str]:
            if m[0] in masked:
                return (m[0], "masked", "")
            if m[0] == "/sys":
                return (m[0], m[1], m[2].replace(",sb:ro", ",sb:rw"))
            return m

        return sorted(one(m) for m in mounts)

    assert accepted(runc) == accepted(crun)


def resources(disk: Device) -> Config:
    def device(rate: int) -> list[dict[str, int]]:
        return [{"major": disk.major, "minor": disk.minor, "rate": rate}]

    return {
        "memory": {"limit": 64 * MiB, "swap": 96 * MiB},
        "cpu": {"quota": 50000, "period": 100000, "shares": 512, "cpus": "0"},
        "pids": {"limit": 40},
        "blockIO": {
            "weight": 300,
            "throttleReadBpsDevice": device(4 * MiB),
            "throttleWriteIOPSDevice": device(50),
        },
        "unified": {"memory.high": str(48 * MiB)},
    }


LIMIT_FILES = ("memory.max", "memory.swap.max", "memory.high", "cpu.max", "cpu.weight",
               "cpuset.cpus", "pids.max", "io.max", "io.weight", "io.bfq.weight")  # fmt: skip


def test_cgroup_limits_read_back_from_the_kernel(
    bundles: Bundles, scratch_disk: tuple[str, Device]
) -> None:
    """memory, cpu (shares converted to cpu.weight), cpuset, pids, blockIO (weight and
    throttles on the scratch disk) and unified, read from the kernel's files while it runs."""
    disk = scratch_disk[1]
    found = {}
    for runtime in RUNTIMES:
        with bundles.held(runtime, "limits", "", lambda c: c["linux"]["resources"].update(
                resources(disk))) as held:  # fmt: skip
            found[runtime] = held.read(*LIMIT_FILES)
            outcome = held.release()
        assert outcome.status == 0, outcome.describe()
    files = same("cgroup files", found)
    assert files["memory.max"] == str(64 * MiB)
    assert files["memory.swap.max"] == str(32 * MiB)  # OCI swap is memory + swap
    assert files["memory.high"] == str(48 * MiB)
    assert (files["cpu.max"], files["cpuset.cpus"], files["pids.max"]) == (
        "50000 100000",
        "0",
        "40",
    )
    assert f"{disk} rbps={4 * MiB} wbps=max riops=max wiops=50" in files["io.max"]


def test_memory_limit_exceeded_kills_with_sigkill(bundles: Bundles, fs: CgroupFS) -> None:
    """dd with a 64 MiB buffer under memory.max 16 MiB and no swap: the OOM killer, exit 137,
    and oom_kill 1 in memory.events of a parent the test owns (hierarchical since 5.2, so
    still readable after the runtime removed the container's cgroup)."""
    statuses, kills = {}, {}
    for runtime in RUNTIMES:
        parent = f"corral-test/oci-oom-{runtime}"
        fs.create(parent)
        fs.enable_controllers(parent, ["memory"])

        def config(c: Config, parent: str = parent) -> None:
            c["linux"]["cgroupsPath"] = f"/{parent}/ctr"
            c["linux"]["resources"]["memory"] = {"limit": 16 * MiB, "swap": 16 * MiB}

        dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
        statuses[runtime] = bundles.run(runtime, "oom", dd, config).status
        kills[runtime] = flat_keyed((fs.path(parent) / "memory.events").read_text())["oom_kill"]
    assert same("exit status on OOM", statuses) == 128 + signal.SIGKILL
    assert same("memory.events oom_kill", kills) == 1


def test_pids_limit_makes_fork_fail_with_eagain(bundles: Bundles) -> None:
    """pids.max 6: a subshell starts sleeps until fork fails; busybox sh reports EAGAIN's
    message; the kernel counts the refusal in pids.events (of the forking task's cgroup)."""
    found, errors = {}, {}
    forks = "( for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done ) 2>/sync/err"

    def config(c: Config) -> None:
        c["linux"]["resources"]["pids"] = {"limit": 6}

    for runtime in RUNTIMES:
        with bundles.held(runtime, "pids", forks, config) as held:
            files = held.read("pids.max", "pids.current", "pids.events")
            outcome = held.release()
        assert outcome.status == 0, outcome.describe()
        refused = flat_keyed(files.pop("pids.events"))["max"]
        found[runtime] = {**files, "refused": str(refused > 0)}
        errors[runtime] = (held.sync / "err").read_text()
    files = same("pids files", found)
    assert (files["pids.max"], files["refused"]) == ("6", "True"), files
    for runtime, text in errors.items():
        assert "can't fork: Resource temporarily unavailable" in text, f"{runtime}: {text!r}"
