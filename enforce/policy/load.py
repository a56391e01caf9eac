"""TOML policy files -> Policy, with errors that name FILE:LINE, the field path, the bad value
and what is allowed.

tomllib keeps no positions, so the line of an offending key is found again in the text
(enforce.policy.toml_lines): the n-th ``[[rule]]`` header, then the controller's table
(``[rule.memory_pressure]``, a dotted key or an inline table) below it, then the key itself.
A directory merges every ``*.toml`` in name order: rules keep file order, rule names must be
unique across files, and at most one file may have an ``[enforcer]`` table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from enforce.actions import format_value
from enforce.policy.schema import LimitsParams, Policy, Rule
from enforce.policy.select import may_overlap
from enforce.policy.toml_lines import (
    LocatedError,
    describe,
    key_line,
    line_of,
    next_header,
    read_toml,
)
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.limit_syntax import format_cpus, format_size


class PolicyError(LocatedError):
    """A policy that cannot be used. str() = "FILE:LINE: field.path: bad value ...: allowed
    ..."; ``errors`` holds every such line when there are several."""


def load_policy(path: str | Path) -> Policy:
    """One TOML file, validated. Raises PolicyError (OSError text included) on any fault."""
    path = Path(path)
    raw, text = _read(path)
    policy = _validate(raw, text, str(path))
    _check_conflicts(
        policy.rules, {r.name: (str(path), text, i) for i, r in enumerate(policy.rules)}
    )
    return policy


def load_policies(path: str | Path) -> Policy:
    """A file, or every ``*.toml`` of a directory merged in name order."""
    path = Path(path)
    if not path.is_dir():
        return load_policy(path)
    files = sorted(path.glob("*.toml"))
    if not files:
        raise PolicyError([f"{path}: no *.toml policy files in this directory"])
    rules: list[Rule] = []
    where: dict[str, tuple[str, str, int]] = {}
    settings_from: str | None = None
    settings = None
    errors: list[str] = []
    for file in files:
        raw, text = _read(file)
        policy = _validate(raw, text, str(file))
        if "enforcer" in raw:
            if settings_from is not None:
                line = line_of(text, r"^\s*\[enforcer\]")
                errors.append(
                    f"{file}:{line}: enforcer: given again: allowed in one file only "
                    f"(already in {settings_from})"
                )
            settings_from, settings = str(file), policy.settings
        for index, rule in enumerate(policy.rules):
            if rule.name in where:
                line = _rule_line(text, index)
                errors.append(
                    f"{file}:{line}: rule.name: {rule.name!r} is also a rule in "
                    f"{where[rule.name][0]}: allowed names unique across the directory"
                )
                continue
            where[rule.name] = (str(file), text, index)
            rules.append(rule)
    if errors:
        raise PolicyError(errors)
    _check_conflicts(tuple(rules), where)
    merged: dict[str, Any] = {"rule": rules, "source": ",".join(str(f) for f in files)}
    if settings is not None:
        merged["enforcer"] = settings
    return Policy.model_validate(merged)


def _read(path: Path) -> tuple[dict[str, Any], str]:
    return read_toml(path, "policy", PolicyError)


def _validate(raw: dict[str, Any], text: str, source: str) -> Policy:
    # Only the TOML names: the model's own field names (settings, rules, source) are not
    # keys a file may set.
    unknown = [k for k in raw if k not in ("enforcer", "rule")]
    if unknown:
        lines = [line_of(text, r"^\s*\[*" + re.escape(k) + r"\b") for k in unknown]
        raise PolicyError(
            [
                f"{source}:{line}: {k}: unknown key: allowed keys enforcer, rule"
                for k, line in zip(unknown, lines, strict=True)
            ]
        )
    try:
        return Policy.model_validate({**raw, "source": source})
    except ValidationError as e:
        raise PolicyError([_describe(err, text, source) for err in e.errors()]) from None


def _describe(err: Any, text: str, source: str) -> str:
    return describe(err, source, _line_for(text, tuple(err["loc"])), Policy, "(policy)")


def _rule_line(text: str, index: int) -> int:
    starts = [i for i, ln in enumerate(text.splitlines()) if re.match(r"^\s*\[\[rule\]\]", ln)]
    return starts[index] + 1 if index < len(starts) else 1


def _line_for(text: str, loc: tuple[Any, ...]) -> int:
    """Best line for an error at ``loc``: its key inside its table, else the table."""
    lines = text.splitlines()
    keys = [p for p in loc if isinstance(p, str) and not p.startswith("function-")]
    if not loc or loc[0] not in ("rule", "enforcer"):
        return 1
    if loc[0] == "enforcer":
        start = line_of(text, r"^\s*\[enforcer\]") - 1
        end = next_header(lines, start + 1, r"^\s*\[")
        return key_line(lines, start, end, keys[1:], "enforcer") or start + 1
    if len(loc) < 2 or not isinstance(loc[1], int):
        return line_of(text, r"^\s*\[\[rule\]\]")
    start = _rule_line(text, loc[1]) - 1
    end = next_header(lines, start + 1, r"^\s*\[\[|^\s*\[enforcer\]")
    return key_line(lines, start, end, keys[1:], "rule") or start + 1


def _check_conflicts(rules: Sequence[Rule], where: dict[str, tuple[str, str, int]]) -> None:
    """Refuse two rules whose selectors may overlap and whose static limits set one file to
    different values: first-match-wins would hide the later value silently."""
    errors: list[str] = []
    for i, a in enumerate(rules):
        for b in rules[i + 1 :]:
            if a.limits is None or b.limits is None or not may_overlap(a.select, b.select):
                continue
            for key in LimitsParams.model_fields:
                va, vb = getattr(a.limits, key), getattr(b.limits, key)
                if va is not None and vb is not None and va != vb:
                    file, text, index = where[b.name]
                    line = _line_for(text, ("rule", index, "limits", key))
                    errors.append(
                        f"{file}:{line}: rule {b.name!r} limits.{key} = {_show(vb)} conflicts "
                        f"with rule {a.name!r} limits.{key} = {_show(va)}: their selectors may "
                        "match the "
                        "same cgroup; allowed: disjoint selectors (kind, labels, name or "
                        "cgroup) or the same value"
                    )
    if errors:
        raise PolicyError(errors)


def _show(value: object) -> str:
    """A limit as a policy writes it ("2G", "0.5", "max")."""
    if isinstance(value, CpuMax):
        return format_cpus(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or value is MAX:
        return format_size(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) or "" for v in value) + "]"
    return str(value)
