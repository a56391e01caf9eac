"""The container lifecycle through the CLI: detach, ps, exec, logs -f, stop (with a process
that ignores SIGTERM), kill, rm, --init, update on this host, and containers outliving the
CLI that started them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from test_container_run import (  # noqa: F401 - fixtures
    TIMEOUT,
    Host,
    host_fixture,
    nothing_left,
    rootfs_fixture,
    wait_for,
)

from runtime.container import lifecycle
from runtime.container.cgroup import ContainerCgroups
from runtime.container.spec import build_spec
from runtime.container.state import StateStore

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "uts")


def detach(host: Host, rootfs: Path, name: str, script: str, *options: str) -> str:
    out = host.corral("run", "-d", "--name", name, *options, str(rootfs), "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", out.stdout)
    return out.stdout.strip()


def ps(host: Host, *options: str) -> dict[str, dict[str, object]]:
    out = host.corral("ps", "--json", *options)
    assert out.returncode == 0, out.stderr
    return {c["name"]: c for c in json.loads(out.stdout)}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_detach_returns_and_the_container_outlives_the_cli(host: Host, rootfs: Path) -> None:
    cid = detach(host, rootfs, "bg", f"exec sleep {host.marker}")
    state = host.inspect("bg")
    assert state["status"] == "running" and alive(state["pid"]) and alive(state["shim_pid"])
    assert Path(f"/proc/{state['pid']}/cmdline").read_bytes() == f"sleep\0{host.marker}\0".encode()
    cgroup = Path(f"/proc/{state['pid']}/cgroup").read_text()
    assert cgroup.rstrip().endswith(f"/{host.parent}/{cid}")
    assert ps(host)["bg"]["id"] in (cid, cid[:12])
    assert host.corral("kill", "bg").returncode == 0
    assert host.wait_status("bg", "stopped")["exit_code"] == 128 + signal.SIGKILL


def test_a_new_cli_finds_the_container_after_the_first_was_killed(host: Host, rootfs: Path) -> None:
    script = "echo one; read line < /dev/stdin; while true; do echo tick; sleep 0.1; done"
    run = host.popen("run", "--name", "orphan", str(rootfs), "--", "sh", "-c", script)
    assert run.stdout is not None and run.stdout.readline() == "one\n"
    run.kill()  # the CLI dies; the shim and the container do not
    run.wait(TIMEOUT)
    pid = host.inspect("orphan")["pid"]
    time.sleep(0.3)
    assert alive(pid) and ps(host)["orphan"]["status"] == "running"
    logs = host.corral("logs", "orphan").stdout
    assert logs.startswith("one\ntick\n")
    assert host.corral("stop", "-t", "0", "orphan").returncode == 0
    assert host.inspect("orphan")["exit_code"] == 128 + signal.SIGKILL
    assert not alive(pid)


@pytest.mark.parametrize("userns", ["host", "auto"])
def test_exec_joins_every_namespace_the_cgroup_and_the_hardening(
    host: Host, rootfs: Path, userns: str
) -> None:
    detach(host, rootfs, "target", f"exec sleep {host.marker}", "--userns", userns)
    names = (*NAMESPACES, "user") if userns == "auto" else NAMESPACES
    links = "; ".join(
        f'echo "{ns} $(readlink /proc/self/ns/{ns}) $(readlink /proc/1/ns/{ns})"' for ns in names
    )
    out = host.corral("exec", "target", "--", "sh", "-c", links)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(names)
    for line in out.stdout.splitlines():
        ns, mine, theirs = line.split()
        assert mine == theirs and mine != os.readlink(f"/proc/self/ns/{ns}"), line
    script = (
        "grep '^0::' /proc/self/cgroup; grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status"
    )
    out = host.corral("exec", "target", "--", "sh", "-c", script)
    pid1 = host.corral("exec", "target", "--", "grep", "CapEff", "/proc/1/status").stdout
    assert out.stdout.split() == [
        "0::/",
        "CapEff:",
        pid1.split()[1],
        "NoNewPrivs:",
        "1",
        "Seccomp:",
        "2",
    ]
    assert host.corral("kill", "target").returncode == 0


def test_exec_env_workdir_user_and_exit_status(host: Host, rootfs: Path) -> None:
    detach(host, rootfs, "shell", f"exec sleep {host.marker}")
    out = host.corral(
        "exec", "-e", "WHO=me", "-w", "/tmp", "-u", "1000:1000", "shell", "--",
        "sh", "-c", "echo $WHO $HOSTNAME; pwd; id -u; exit 4",
    )  # fmt: skip
    assert (out.returncode, out.stdout) == (4, "me shell\n/tmp\n1000\n"), out.stderr
    missing = host.corral("exec", "shell", "--", "nosuchcommand")
    assert missing.returncode == 127 and "nosuchcommand: not found" in missing.stderr
    assert host.corral("kill", "shell").returncode == 0
    host.wait_status("shell", "stopped")
    stopped = host.corral("exec", "shell", "--", "true")
    assert stopped.returncode == 125 and "is not running" in stopped.stderr


def test_logs_follow_until_the_container_exits(host: Host, rootfs: Path) -> None:
    detach(host, rootfs, "talker", "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done")
    follow = host.popen("logs", "-f", "talker")
    out, err = follow.communicate(timeout=TIMEOUT)
    assert follow.returncode == 0, err
    assert out == "".join(f"line {i}\n" for i in range(1, 6))


def test_stop_a_process_that_ignores_sigterm_uses_cgroup_kill(host: Host, rootfs: Path) -> None:
    detach(host, rootfs, "stubborn", "trap '' TERM; echo ready; while true; do sleep 0.1; done")
    wait_for(lambda: "ready" in host.corral("logs", "stubborn").stdout, "the trap to be set")
    start = time.monotonic()
    assert host.corral("stop", "-t", "1", "stubborn").returncode == 0
    took = time.monotonic() - start
    assert 1.0 <= took < 8, took
    state = host.inspect("stubborn")
    assert (state["status"], state["exit_code"]) == ("stopped", 128 + signal.SIGKILL)


def test_stop_a_process_that_handles_sigterm_is_graceful(host: Host, rootfs: Path) -> None:
    detach(host, rootfs, "polite", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done")
    wait_for(lambda: "ready" in host.corral("logs", "polite").stdout, "the trap to be set")
    start = time.monotonic()
    assert host.corral("stop", "polite").returncode == 0
    assert time.monotonic() - start < 5
    assert host.inspect("polite")["exit_code"] == 0


def test_kill_takes_signal_names_and_numbers(host: Host, rootfs: Path) -> None:
    script = (
        "trap 'echo usr1' USR1; trap 'echo hup' HUP; echo ready; while true; do sleep 0.1; done"
    )
    detach(host, rootfs, "sig", script)
    wait_for(lambda: "ready" in host.corral("logs", "sig").stdout, "the traps to be set")
    assert host.corral("kill", "-s", "USR1", "sig").returncode == 0
    assert host.corral("kill", "-s", "SIGHUP", "sig").returncode == 0
    # a shell runs pending traps in signal-number order: HUP (1) may come before USR1 (10)
    wait_for(lambda: {"usr1", "hup"} <= set(host.corral("logs", "sig").stdout.split()), "traps")
    bad = host.corral("kill", "-s", "NOPE", "sig")
    assert bad.returncode == 125 and "signal 'NOPE'" in bad.stderr
    assert host.corral("kill", "-s", "9", "sig").returncode == 0
    assert host.wait_status("sig", "stopped")["exit_code"] == 137


def test_rm_removes_the_cgroup_and_the_state(host: Host, rootfs: Path) -> None:
    with nothing_left(host):
        detach(host, rootfs, "gone", f"exec sleep {host.marker}")
        assert host.corral("stop", "-t", "0", "gone").returncode == 0
        assert host.corral("rm", "gone").returncode == 0
    assert host.corral("inspect", "gone").returncode != 0


def test_init_reaps_orphans_and_forwards_signals(host: Host, rootfs: Path) -> None:
    script = "(sleep 0.1 &); sleep 0.5; ps -o pid,stat,comm; true"  # `true`: sh does not exec ps
    out = host.corral("run", "--rm", "--init", str(rootfs), "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [r for r in rows if r[1].startswith("Z")] == []
    assert [r[0] for r in rows if r[2] == "sh"] == ["2"]
    assert [r[2] for r in rows if r[0] == "1"] == ["corral-init"]
    detach(host, rootfs, "inited", f"exec sleep {host.marker}", "--init")
    assert host.corral("stop", "-t", "5", "inited").returncode == 0
    assert host.inspect("inited")["exit_code"] == 128 + signal.SIGTERM


def test_update_refuses_limits_this_host_cannot_enforce(host: Host, rootfs: Path) -> None:
    cid = detach(host, rootfs, "upd", f"exec sleep {host.marker}")
    cgroup = host.fs.path(f"{host.parent}/{cid}")
    before = sorted(p.name for p in cgroup.iterdir())
    out = host.corral("update", "--memory", "64m", "upd")
    assert out.returncode == 125 and "memory controller" in out.stderr, out.stderr
    assert sorted(p.name for p in cgroup.iterdir()) == before
    bad = host.corral("update", "--cpus", "lots", "upd")
    assert bad.returncode == 125 and "--cpus" in bad.stderr
    none = host.corral("update", "upd")
    assert none.returncode == 125 and "no limit given" in none.stderr
    assert host.corral("kill", "upd").returncode == 0


def test_200_run_rm_cycles_leak_nothing(host: Host, rootfs: Path) -> None:
    """CLI's code path in this process (no Python start per cycle): no cgroup, state, mount,
    process or fd of this process is left after 200 `run --rm` of `true`."""
    store, cgroups = StateStore(str(host.state_dir)), ContainerCgroups(host.fs, host.parent)
    spec = build_spec(rootfs=str(rootfs), command=["true"], rm=True)
    fds = sorted(os.listdir("/proc/self/fd"))
    with nothing_left(host):
        for i in range(200):
            started = lifecycle.run(spec, store, cgroups, attach=True)
            assert lifecycle.wait_exit(store, started) == 0, f"cycle {i}"
        assert host.cgroups() == [] and store.list() == []
    assert sorted(os.listdir("/proc/self/fd")) == fds
