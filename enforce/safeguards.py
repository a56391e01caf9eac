"""The checks every action must pass before anything is written: ``refusal`` returns the
reason an action must not be applied, or None. Pure: the actuator and the simulator both
call it on the snapshot the decision was made from. (The write rate limit needs a clock and
lives in the actuator.)

- Never the cgroup2 root, never outside the managed root, never init.scope (systemd's PID 1
  lives there: a limit or a kill there takes the host down), never the agent's own cgroup or
  one of its ancestors (the enforcer must not throttle, freeze or kill itself), and no
  freeze or kill of the managed root itself (that is every managed cgroup at once).
- Never a cgroup the snapshot does not have (it vanished; a new one at the path is unknown).
- memory.max never below memory.current + margin: below usage the kernel reclaims and then
  OOM-kills (cgroup-v2.rst), so squeezing is memory.high's job.
- The value must have the file's type (an int or max for memory and pids files, CpuMax for
  cpu.max, ...), so a controller bug cannot write nonsense.
"""

from __future__ import annotations

from enforce.actions import Action, IoLimit
from enforce.policy.schema import EnforcerSettings
from enforce.policy.select import under
from monitor.snapshot import Snapshot
from runtime.cgroupfs.cpu import WEIGHT_MAX, WEIGHT_MIN, CpuMax, validate_cpu_max
from runtime.cgroupfs.errors import InvalidLimit
from runtime.cgroupfs.formats import MAX

_INT_OR_MAX = frozenset(
    {"memory.high", "memory.max", "memory.low", "memory.min", "memory.swap.max", "pids.max"}
)


def refusal(
    action: Action, snapshot: Snapshot, settings: EnforcerSettings, own_cgroup: str | None
) -> str | None:
    """Why ``action`` must not be applied, or None when it may be."""
    path = action.cgroup
    if path == "":
        return "the root cgroup is never written"
    if not under(path, settings.managed_root):
        return f"{path} is outside the managed root {settings.managed_root!r}"
    if "init.scope" in path.split("/"):
        return f"{path} is (in) init.scope, where the init system lives"
    if own_cgroup is not None and (own_cgroup == path or own_cgroup.startswith(path + "/")):
        return f"{path} holds the enforcer itself ({own_cgroup})"
    if action.file in ("cgroup.kill", "cgroup.freeze") and path == settings.managed_root:
        return f"{action.file} on the managed root {path} would stop every managed cgroup"
    sample = snapshot.sample.cgroups.get(path)
    if sample is None:
        return f"{path} is not in the snapshot (gone)"
    wrong = _type_error(action)
    if wrong is not None:
        return wrong
    if action.file == "memory.max" and isinstance(action.new, int):
        current = sample.memory_current
        margin = settings.memory_max_margin_bytes
        if current is not None and action.new < current + margin:
            return (
                f"memory.max {action.new} is below memory.current {current} + margin {margin}"
                " (the kernel would reclaim then OOM-kill; squeeze memory.high instead)"
            )
    return None


def _type_error(action: Action) -> str | None:
    new, file = action.new, action.file
    ok: bool
    if file in _INT_OR_MAX:
        ok = new is MAX or (isinstance(new, int) and not isinstance(new, bool) and new >= 0)
    elif file == "cpu.max":
        ok = isinstance(new, CpuMax) and _valid_cpu_max(new)
    elif file == "cpu.weight":
        ok = isinstance(new, int) and not isinstance(new, bool) and WEIGHT_MIN <= new <= WEIGHT_MAX
    elif file == "io.max":
        ok = isinstance(new, IoLimit)
    elif file == "cgroup.freeze":
        ok = isinstance(new, bool)
    else:  # cgroup.kill: only ever "1"
        ok = new is True
    return None if ok else f"{file}: {new!r} is not a value this file takes"


def _valid_cpu_max(value: CpuMax) -> bool:
    try:
        validate_cpu_max(value)
    except InvalidLimit:
        return False
    return True
