"""oom_guard: oomd's pressure kill, on cgroup v2's own kill switch.

The watched cgroup (``watch``, default the managed root) is in trouble when its memory.pressure
``full`` avg10 (the share of the last 10 s in which every task stalled on memory) stays above
``full_avg10`` for ``duration`` while reclaim is running (memory.stat pgscan rising: the
kernel is scanning for pages, so the pressure is a shortage and not one slow fault).
Then one candidate among the rule's cgroups is frozen (cgroup.freeze 1: it stops allocating
at once) and killed (cgroup.kill 1: SIGKILL to the whole subtree, race-free against forks),
chosen by ``size`` (memory.current) or ``growth`` (its increase over ``duration``), ``prefer``
globs first and ``avoid`` globs last. Nothing more is done for ``post_action_delay``, so the
freed memory can show in the pressure before another victim is judged (oomd's post-action
delay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from enforce.actions import AuditEntry
from enforce.controllers import Decision, Target, fmt_bytes, now_of, sample_of, window
from enforce.policy.schema import OomGuardParams
from monitor.sample import CgroupSample
from monitor.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class State:
    above_since: float | None = None  # monotonic s since which full avg10 is above the limit
    last_kill: float | None = None


def reclaiming(history: Sequence[Snapshot], cgroup: str, seconds: float) -> bool | None:
    """pgscan (or pgsteal) rose over the last ``seconds``; None when memory.stat lacks it."""
    snaps = window(history, seconds)
    first, last = snaps[0].sample.cgroups.get(cgroup), snaps[-1].sample.cgroups.get(cgroup)
    if len(snaps) < 2 or first is None or last is None:
        return None
    if first.memory_stat is None or last.memory_stat is None:
        return None
    known = False
    for key in ("pgscan", "pgsteal"):
        a, b = first.memory_stat.get(key), last.memory_stat.get(key)
        if a is not None and b is not None:
            known = True
            if b > a:
                return True
    return False if known else None


def _matches(path: str, globs: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatchcase(path, g) or fnmatchcase(name, g) for g in globs)


def choose(
    params: OomGuardParams, cgroups: Sequence[str], history: Sequence[Snapshot], watch: str
) -> tuple[str, int] | None:
    """The victim and its score (bytes of size or of growth), or None. The watched cgroup
    and its ancestors are never candidates: killing them kills every candidate at once."""
    scored: list[tuple[int, int, str]] = []
    oldest = window(history, params.duration)[0].sample.cgroups
    for path in cgroups:
        if path == watch or watch.startswith(path + "/"):
            continue
        sample = sample_of(history, path)
        if sample is None or sample.memory_current is None or _frozen(sample):
            continue
        score = sample.memory_current
        if params.choose == "growth":
            before = oldest.get(path)
            start = before.memory_current if before and before.memory_current else 0
            score = sample.memory_current - start
        rank = 0 if _matches(path, params.prefer) else 2 if _matches(path, params.avoid) else 1
        scored.append((rank, -score, path))
    if not scored:
        return None
    rank, neg, path = min(scored)
    return path, -neg


def _frozen(sample: CgroupSample) -> bool:
    return sample.events is not None and sample.events.frozen


def decide(
    params: OomGuardParams,
    target: Target,
    cgroups: Sequence[str],
    history: Sequence[Snapshot],
    state: State | None,
    managed_root: str,
) -> Decision[State]:
    state = state or State()
    watch = params.watch if params.watch is not None else managed_root
    sample = sample_of(history, watch)
    psi = None if sample is None else sample.pressure.get("memory")
    if psi is None or psi.full is None:
        return Decision(state)
    now = now_of(history)
    full = psi.full.avg10 / 100  # the file shows percent
    if full <= params.full_avg10:
        return Decision(replace(state, above_since=None))
    above = state.above_since if state.above_since is not None else now
    state = replace(state, above_since=above)
    if now - above < params.duration:
        return Decision(state)
    if state.last_kill is not None and now - state.last_kill < params.post_action_delay:
        return Decision(state)
    if reclaiming(history, watch, params.duration) is False:
        return Decision(state, notes=(f"{watch}: full pressure {full:.0%} without reclaim",))
    victim = choose(params, cgroups, history, watch)
    if victim is None:
        return Decision(state, notes=(f"{watch}: full pressure {full:.0%}, no candidate",))
    path, score = victim
    victim_sample = sample_of(history, path)
    assert victim_sample is not None
    why = (
        f"{watch or '/'} memory full avg10 {full:.0%} > {params.full_avg10:.0%} for "
        f"{now - above:.0f} s with reclaim; {params.choose} {fmt_bytes(score)}"
    )
    inputs: dict[str, float | int | str] = {
        "full_avg10": round(full, 4),
        "above_seconds": round(now - above, 1),
        "score_bytes": score,
        "memory_current": victim_sample.memory_current or 0,
    }
    was_frozen = _frozen(victim_sample) if victim_sample.events is not None else None
    freeze = target.action(path, "cgroup.freeze", was_frozen, True, "freeze: " + why, inputs)
    kill = target.action(path, "cgroup.kill", None, True, "kill: " + why, inputs)
    return Decision(State(above_since=None, last_kill=now), (freeze, kill))


def observe(state: State, entry: AuditEntry) -> State | None:
    """The post-action delay runs from the decision whatever the outcome: a refused or
    failed kill is not retried at once."""
    return state
