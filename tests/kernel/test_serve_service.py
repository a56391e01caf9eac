"""`corral serve` as a delegated service on a real cgroup v2: started in a cgroup of its own
(as systemd starts a unit with Delegate=yes) it moves into its ``agent`` leaf, so the service's
cgroup can then enable controllers for a sibling (without the move the kernel refuses with
EBUSY); a rule that matches the agent's own cgroup is refused there and applied to another
cgroup; SIGHUP with a broken policy keeps the running one enforcing, a good one is swapped in;
SIGTERM leaves no process in the service's cgroup."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kernel_harness import START_TIMEOUT, cgroup_of, populated, wait_until

from enforce.actions import Outcome
from enforce.audit import read_audit
from runtime.cgroupfs import CgroupFS, WriteRejected

CORRAL = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "corral")


T = TypeVar("T")


def pids_max(fs: CgroupFS, cgroup: str) -> str:
    return (fs.read(cgroup, "pids.max") or "").strip()


class Service:
    """`corral serve --config FILE` started inside ``cgroup``, logging to a file."""

    def __init__(self, fs: CgroupFS, cgroup: str, tmp_path: Path, config: str) -> None:
        self.log = tmp_path / f"serve-{cgroup.replace('/', '_')}.log"
        path = tmp_path / f"corral-{cgroup.replace('/', '_')}.toml"
        path.write_text('listen = "127.0.0.1:0"\ninterval = "200ms"\n' + config)

        def join_cgroup() -> None:  # in the child, before exec: the service's cgroup
            fs.move(os.getpid(), cgroup)

        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [CORRAL, "serve", "--config", str(path)],
                stdout=out,
                stderr=out,
                preexec_fn=join_cgroup,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        self.wait_log(r"listening on http://")

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, pattern: str) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.text()}"
            return re.search(pattern, self.text())

        match = wait_until(found, START_TIMEOUT, f"{pattern!r} in the agent's log")
        assert match is not None
        return match

    def wait_for(self, check: Callable[[], T], what: str) -> T:
        """wait_until, with the agent's log in the failure."""
        try:
            return wait_until(check, 60, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; the agent's log:\n{self.text()}") from None

    def terminate(self, fs: CgroupFS, cgroups: list[str]) -> None:
        """SIGTERM: exit 0 within seconds, and not one process left in ``cgroups``."""
        self.proc.send_signal(signal.SIGTERM)
        # The bound is the unit's TimeoutStopSec (dist/systemd/corral.service), after which
        # systemd would kill it.
        assert self.proc.wait(timeout=15) == 0, self.text()
        for c in cgroups:
            assert fs.procs(c) == [], f"{c}: {fs.procs(c)}"
        assert not populated(fs, cgroups[0])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


def test_the_agent_moves_into_its_leaf_so_its_cgroup_can_delegate_controllers(
    fs: CgroupFS, cgroup: str, tmp_path: Path, services: list[Service]
) -> None:
    fs.enable_controllers(cgroup, ["memory", "pids"])
    svc, stay = f"{cgroup}/svc", f"{cgroup}/stay"
    for c in (svc, stay):
        fs.create(c)
    config = f'[collector]\nsubtree = "{cgroup}"\n'
    agent = Service(fs, svc, tmp_path, config)
    services.append(agent)
    agent.wait_log(rf"moved from /{svc} into its leaf cgroup /{svc}/agent")
    assert cgroup_of(agent.proc.pid) == f"{svc}/agent"
    assert fs.procs(svc) == []
    # The service's cgroup now holds no process: it may hand memory to a sibling of the leaf.
    fs.create(f"{svc}/work")
    fs.write(svc, "cgroup.subtree_control", "+memory")
    assert "memory" in fs.subtree_control(svc)
    assert (fs.root / svc / "work" / "memory.max").is_file()

    # The control: an agent told to stay where it is (cgroup_leaf = "") blocks the same write.
    stayer = Service(fs, stay, tmp_path, 'cgroup_leaf = ""\n' + config)
    services.append(stayer)
    assert cgroup_of(stayer.proc.pid) == stay
    fs.create(f"{stay}/work")
    with pytest.raises(WriteRejected) as refused:
        fs.write(stay, "cgroup.subtree_control", "+memory")
    assert refused.value.errno == errno.EBUSY

    agent.terminate(fs, [svc, f"{svc}/agent"])
    stayer.terminate(fs, [stay])


def test_a_rule_that_matches_the_agents_cgroup_is_refused_there_and_applied_elsewhere(
    fs: CgroupFS, cgroup: str, tmp_path: Path, services: list[Service]
) -> None:
    fs.enable_controllers(cgroup, ["pids"])
    svc, work = f"{cgroup}/svc", f"{cgroup}/work"
    for c in (svc, work):
        fs.create(c)
    audit = tmp_path / "audit.jsonl"
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[enforcer]\nmanaged_root = "{cgroup}"\ntick_seconds = "300ms"\naudit_log = "{audit}"\n'
        f'[[rule]]\nname = "cap"\nselect = {{ cgroup = "{cgroup}/*" }}\nlimits.pids_max = 50\n'
    )
    config = f'[collector]\nsubtree = "{cgroup}"\n[enforcer]\npolicy = "{policy}"\n'
    agent = Service(fs, svc, tmp_path, config)
    services.append(agent)
    agent.wait_log(rf"moved from /{svc} into its leaf cgroup /{svc}/agent")
    agent.wait_for(lambda: pids_max(fs, work) == "50", f"{work}/pids.max = 50")

    def refusals() -> list[str]:
        entries = read_audit(str(audit))
        return [e.reason for e in entries if e.cgroup == svc and e.outcome is Outcome.REFUSED]

    reasons = agent.wait_for(refusals, f"a refusal for {svc} in the audit")
    assert f"{svc} holds the enforcer itself ({svc}/agent)" in reasons[0]
    assert pids_max(fs, svc) == "max"
    entries = read_audit(str(audit))
    assert not [e for e in entries if e.cgroup.startswith(svc) and e.outcome is Outcome.APPLIED]

    # SIGHUP with a broken policy: refused in one line naming it, and the running policy
    # still enforces (a hand-made drift is put back to 50).
    good = policy.read_text()
    policy.write_text(good.replace("limits.pids_max = 50", "limits.pids_max = -7"))
    agent.proc.send_signal(signal.SIGHUP)
    refused = agent.wait_log(r"reload refused, the running (configuration|enforcer) stays: (.*)")
    assert str(policy) in refused[2] and "pids_max" in refused[2], refused[0]
    fs.write(work, "pids.max", "max")
    agent.wait_for(lambda: pids_max(fs, work) == "50", "the old policy re-applying 50")
    # A good one is swapped in.
    policy.write_text(good.replace("limits.pids_max = 50", "limits.pids_max = 60"))
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log(r"policy .* swapped in")
    agent.wait_for(lambda: pids_max(fs, work) == "60", "the new policy's 60")
    assert agent.proc.poll() is None
    agent.terminate(fs, [svc, f"{svc}/agent"])
