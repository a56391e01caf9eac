"""Where `corral demo` runs: this host with a full cgroup v2, else a corral machine."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from corral.demo.where import GUEST_PORT, HostFacts, Machine, choose, host_facts, machine_argv

FULL = frozenset({"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"})
HYBRID = HostFacts("hybrid", "/sys/fs/cgroup/unified", frozenset({"hugetlb"}))
EMPTY = HostFacts("hybrid", "/sys/fs/cgroup/unified", frozenset())
UNIFIED = HostFacts("unified", "/sys/fs/cgroup", FULL)
LEGACY = HostFacts("legacy", None, frozenset())


@pytest.mark.parametrize(
    ("choice", "facts", "machine", "says"),
    [
        ("auto", UNIFIED, False, "has cpu io memory pids"),
        ("auto", HYBRID, True, "lacks cpu io memory pids (hybrid layout): running the demo in"),
        ("auto", EMPTY, True, "cgroup2 has no controllers (hybrid layout): running the demo in"),
        ("auto", LEGACY, True, "no cgroup2 hierarchy (legacy layout)"),
        ("auto", HostFacts("unified", "/sys/fs/cgroup", FULL - {"io"}), True, "lacks io"),
        ("yes", UNIFIED, True, "--machine yes"),
        ("no", HYBRID, False, "lacks cpu io memory pids"),
        ("no", UNIFIED, False, "on this host (--machine no)"),
    ],
)
def test_choose(choice: str, facts: HostFacts, machine: bool, says: str) -> None:
    where = choose(choice, facts)  # type: ignore[arg-type]
    assert where.machine is machine
    assert says in where.why
    if machine and choice == "auto":
        assert "corral machine with a real cgroup v2 kernel" in where.why


def test_host_facts_of_this_host() -> None:
    """This build host: hybrid, its cgroup2 at /sys/fs/cgroup/unified without cpu/memory."""
    facts = host_facts()
    assert facts.cgroup2 is not None
    offered = Path(facts.cgroup2, "cgroup.controllers").read_text().split()
    assert facts.controllers == frozenset(offered)
    full = {"cpu", "io", "memory", "pids"} <= set(offered)
    assert choose("auto", facts).machine is not full


def test_machine_argv_forwards_the_agent_and_runs_the_stage() -> None:
    argv = machine_argv("/v/bin/corral", 19847, 660, "/var/tmp/d/rootfs")
    split = argv.index("--")
    assert argv[:3] == ["/v/bin/corral", "machine", "run"]
    assert argv[argv.index("--forward") + 1] == f"19847:{GUEST_PORT}"
    assert argv[argv.index("--disk") + 1] == "512M"
    assert argv[argv.index("--timeout") + 1] == "660"
    assert argv[argv.index("--out") + 1] == "/var/tmp/d"  # the guest sees the rootfs there
    assert argv[split + 1 :] == [
        "/v/bin/corral", "demo", "--machine", "no", "--stage-only", "--port", str(GUEST_PORT),
        "--rootfs", "/var/tmp/d/rootfs",
    ]  # fmt: skip
    assert "--timeout" not in machine_argv("/v/bin/corral", 19847, None, "/r")


def test_machine_process_follow_dead_and_stop(tmp_path: Path) -> None:
    """Machine drives any command the way it drives `corral machine run`: progress lines
    passed on, SIGTERM on stop, the log's last lines when it died."""
    script = "echo boot noise; echo 'corral demo: stage ready'; exec sleep 60"
    machine = Machine(["sh", "-c", script], tmp_path / "machine.log")
    said: list[str] = []
    machine.follow(said.append)
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    assert said == ["machine: stage ready"]
    assert machine.dead() is None
    machine.stop()
    assert machine.proc.returncode == -signal.SIGTERM
    gone = Machine(["sh", "-c", "echo cannot boot; exit 3"], tmp_path / "gone.log")
    gone.proc.wait(10)
    assert gone.dead() == "the machine exited 3: cannot boot"
