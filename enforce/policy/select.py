"""Which rule governs which cgroup.

Rules are tried in file order; for each controller the first rule that enables it and whose
selector matches a cgroup governs that cgroup (so a later, broader rule fills in what an
earlier, narrower one left out). Only cgroups at or below the managed root are governed,
never the cgroup2 root itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from enforce.policy.schema import CONTROLLERS, Policy, Rule, Selector
from monitor.snapshot import CgroupName, Snapshot

_WILD = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Assignment:
    """``rule`` governs ``controller`` of ``cgroup``."""

    rule: Rule
    controller: str
    cgroup: str


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it ("" = the whole tree, still never the root itself)."""
    if path == "":
        return False
    return root == "" or path == root or path.startswith(root + "/")


def name_of(path: str, names: Mapping[str, CgroupName]) -> CgroupName:
    """The monitor's name for ``path``, or a plain "cgroup" named after its last component."""
    known = names.get(path)
    if known is not None:
        return known
    return CgroupName(path=path, kind="cgroup", name=path.rsplit("/", 1)[-1])


def matches(selector: Selector, name: CgroupName) -> bool:
    """Every criterion the selector gives matches (globs are fnmatch, case-sensitive)."""
    if selector.kind is not None and name.kind != selector.kind:
        return False
    if selector.name is not None and not fnmatchcase(name.name, selector.name):
        return False
    if selector.cgroup is not None and not fnmatchcase(name.path, selector.cgroup):
        return False
    return all(name.labels.get(k) == v for k, v in selector.labels.items())


def assign(policy: Policy, snapshot: Snapshot) -> list[Assignment]:
    """Every (rule, controller, cgroup) the policy governs in ``snapshot``: per controller
    and cgroup the first matching rule in policy order; cgroups in path order."""
    root = policy.settings.managed_root
    out: list[Assignment] = []
    for path in sorted(snapshot.sample.cgroups):
        if not under(path, root):
            continue
        name = name_of(path, snapshot.names)
        taken: set[str] = set()
        for rule in policy.rules:
            enabled = [c for c in rule.controllers() if c not in taken]
            if not enabled or not matches(rule.select, name):
                continue
            for controller in enabled:
                out.append(Assignment(rule, controller, path))
                taken.add(controller)
            if len(taken) == len(CONTROLLERS):
                break
    return out


def _literal(glob: str | None) -> bool:
    return glob is not None and not (_WILD & set(glob))


def _globs_disjoint(a: str | None, b: str | None) -> bool:
    """True only when no string can match both globs (decided conservatively)."""
    if a is None or b is None:
        return False
    if _literal(a) and _literal(b):
        return a != b
    if _literal(a):
        return not fnmatchcase(a, b)
    if _literal(b):
        return not fnmatchcase(b, a)
    # Two wildcard globs: disjoint when their literal prefixes already differ.
    pa = a[: min(a.find(c) if c in a else len(a) for c in _WILD)]
    pb = b[: min(b.find(c) if c in b else len(b) for c in _WILD)]
    return not (pa.startswith(pb) or pb.startswith(pa))


def may_overlap(a: Selector, b: Selector) -> bool:
    """Whether some cgroup could match both selectors (a static, conservative answer:
    False only when a criterion provably separates them)."""
    if a.kind is not None and b.kind is not None and a.kind != b.kind:
        return False
    if any(k in b.labels and b.labels[k] != v for k, v in a.labels.items()):
        return False
    return not (_globs_disjoint(a.name, b.name) or _globs_disjoint(a.cgroup, b.cgroup))
