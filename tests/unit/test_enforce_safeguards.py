"""enforce.safeguards.refusal: one row per safeguard (each fails if its check is removed),
plus rows that must pass so a safeguard cannot refuse everything."""

from __future__ import annotations

import pytest
from test_enforce_controllers_support import G, M, cg, history, host

from enforce.actions import Action, IoLimit, Mode, Value
from enforce.policy.schema import EnforcerSettings
from enforce.safeguards import refusal
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.io import Device, IoMax

SNAP = history(
    host(
        0,
        cg("", current=8 * G),
        cg("corral", current=3 * G),
        cg("corral/web", current=1 * G),
        cg("corral/agent", current=50 * M),
        cg("init.scope", current=10 * M),
        cg("corral/init.scope", current=10 * M),
        cg("system.slice/sshd.service", current=10 * M),
    )
)[-1]
SETTINGS = EnforcerSettings()  # managed_root "corral", margin 64M
OWN = "corral/agent"


def act(cgroup: str, file: str = "memory.high", new: Value = 512 * M) -> Action:
    return Action("r", "c", cgroup, file, None, new, Mode.ENFORCE, "test")


@pytest.mark.parametrize(
    ("action", "own", "expected"),
    [
        (act(""), None, "the root cgroup is never written"),
        (act("system.slice/sshd.service"), None, "outside the managed root 'corral'"),
        (act("corral/init.scope"), None, "init.scope"),
        (act("corral/agent"), OWN, "holds the enforcer itself (corral/agent)"),
        (act("corral"), OWN, "holds the enforcer itself (corral/agent)"),  # an ancestor
        (act("corral/gone"), None, "corral/gone is not in the snapshot (gone)"),
        (act("corral", "cgroup.kill", True), None, "cgroup.kill on the managed root corral"),
        (act("corral", "cgroup.freeze", True), None, "cgroup.freeze on the managed root"),
        (
            act("corral/web", "memory.max", 1 * G + 63 * M),
            None,
            "memory.max 1139802112 is below memory.current 1073741824 + margin 67108864",
        ),
        (act("corral/web", "memory.high", -1), None, "memory.high: -1 is not a value"),
        (act("corral/web", "pids.max", True), None, "pids.max: True is not a value"),
        (act("corral/web", "cpu.max", CpuMax(10, 100_000)), None, "cpu.max: CpuMax"),
        (act("corral/web", "cpu.max", 5), None, "cpu.max: 5 is not a value"),
        (act("corral/web", "cpu.weight", 0), None, "cpu.weight: 0 is not a value"),
        (act("corral/web", "io.max", 5), None, "io.max: 5 is not a value"),
        (act("corral/web", "cgroup.kill", False), None, "cgroup.kill: False is not a value"),
        (act("corral/web", "cgroup.freeze", 1), None, "cgroup.freeze: 1 is not a value"),
    ],
)
def test_refused(action: Action, own: str | None, expected: str) -> None:
    reason = refusal(action, SNAP, SETTINGS, own)
    assert reason is not None and expected in reason


def test_init_scope_refused_even_when_whole_tree_is_managed() -> None:
    settings = EnforcerSettings(managed_root="")
    assert refusal(act("init.scope"), SNAP, settings, None) is not None
    assert refusal(act("system.slice/sshd.service"), SNAP, settings, None) is None


@pytest.mark.parametrize(
    "action",
    [
        act("corral/web"),
        act("corral/web", "memory.max", 1 * G + 64 * M),  # exactly current + margin
        act("corral/web", "memory.max", MAX),
        act("corral/web", "memory.high", 1 * M),  # memory.high may squeeze below current
        act("corral/web", "cpu.max", CpuMax(50_000)),
        act("corral/web", "cpu.weight", 200),
        act("corral/web", "pids.max", MAX),
        act("corral/web", "io.max", IoLimit(Device(8, 0), IoMax(wbps=1 * M))),
        act("corral/web", "cgroup.freeze", True),
        act("corral/web", "cgroup.kill", True),
        act("corral"),  # the managed root itself, when the agent lives elsewhere
    ],
)
def test_allowed(action: Action) -> None:
    assert refusal(action, SNAP, SETTINGS, "system.slice/corral.service") is None


def test_refusal_is_pure() -> None:
    action = act("corral/web", "memory.max", 1 * G)
    first = refusal(action, SNAP, SETTINGS, None)
    assert first == refusal(action, SNAP, SETTINGS, None)
    assert SNAP.sample.cgroups["corral/web"].limits.memory_max is MAX
