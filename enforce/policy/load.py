"""TOML policy files -> Policy, with errors that name FILE:LINE, the field path, the bad value
and what is allowed.

tomllib keeps no positions, so the line of an offending key is found again in the text: the
n-th ``[[rule]]`` header, then the controller's table (``[rule.memory_pressure]``, a dotted
key or an inline table) below it, then the key itself. A directory merges every ``*.toml`` in
name order: rules keep file order, rule names must be unique across files, and at most one
file may have an ``[enforcer]`` table.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from enforce.actions import format_value
from enforce.policy.schema import LimitsParams, Policy, Rule
from enforce.policy.select import may_overlap
from runtime.cgroupfs.cpu import CpuMax
from runtime.cgroupfs.formats import MAX
from runtime.cgroupfs.limit_syntax import format_cpus, format_size


class PolicyError(ValueError):
    """A policy that cannot be used. str() = "FILE:LINE: field.path: bad value ...: allowed
    ..."; ``errors`` holds every such line when there are several."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


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
                line = _line_of(text, r"^\s*\[enforcer\]")
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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError([f"{path}: cannot read the policy: {e}"]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line L, column C)": move the position to the front.
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)$", msg)
        line = m[1] if m else "1"
        detail = msg[: m.start()].strip() if m else msg
        raise PolicyError([f"{path}:{line}: not valid TOML: {detail}"]) from None


def _validate(raw: dict[str, Any], text: str, source: str) -> Policy:
    # Only the TOML names: the model's own field names (settings, rules, source) are not
    # keys a file may set.
    unknown = [k for k in raw if k not in ("enforcer", "rule")]
    if unknown:
        lines = [_line_of(text, r"^\s*\[*" + re.escape(k) + r"\b") for k in unknown]
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
    loc = tuple(err["loc"])
    field = _field_path(loc)
    line = _line_for(text, loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"{source}:{line}: {field}: unknown key: allowed keys {allowed}"
    if err["type"] == "missing":
        return f"{source}:{line}: {field}: missing: this key is required"
    msg = _allowed(err)
    if isinstance(err.get("input"), dict):  # a model validator: the table, not one key
        return f"{source}:{line}: {field}: {msg}"
    return f"{source}:{line}: {field}: bad value {err.get('input')!r}: {msg}"


_BOUNDS = {
    "less_than_equal": "at most {le}",
    "less_than": "below {lt}",
    "greater_than_equal": "at least {ge}",
    "greater_than": "above {gt}",
    "too_short": "at least {min_length} item(s)",
    "literal_error": "one of {expected}",
    "enum": "one of {expected}",
    "string_pattern_mismatch": "text matching {pattern}",
    "string_too_short": "a non-empty string",
}


def _allowed(err: Any) -> str:
    """pydantic's message turned into "allowed: ..." (ours already say what is allowed)."""
    template = _BOUNDS.get(err["type"])
    if template is not None:
        return "allowed: " + template.format(**err.get("ctx", {}))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "allowed" in msg:
        return msg
    return f"allowed: {msg[0].lower()}{msg[1:]}" if msg else "allowed: see the schema"


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("tagged-union",):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(policy)"


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    """The keys the model at ``loc`` accepts."""
    model: type[BaseModel] = Policy
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        info = fields.get(part)
        nxt = _model_in(info.annotation) if info is not None else None
        if nxt is None:
            break
        model = nxt
    names = [(f.alias or n) for n, f in model.model_fields.items() if n != "source"]
    return ", ".join(names)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X | None`` or ``tuple[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _line_of(text: str, pattern: str, start: int = 0, end: int | None = None) -> int:
    lines = text.splitlines()
    end = len(lines) if end is None else end
    for i in range(start, end):
        if re.search(pattern, lines[i]):
            return i + 1
    return start + 1


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
        start = _line_of(text, r"^\s*\[enforcer\]") - 1
        end = _next_header(lines, start + 1, r"^\s*\[")
        return _key_line(lines, start, end, keys[1:]) or start + 1
    if len(loc) < 2 or not isinstance(loc[1], int):
        return _line_of(text, r"^\s*\[\[rule\]\]")
    start = _rule_line(text, loc[1]) - 1
    end = _next_header(lines, start + 1, r"^\s*\[\[|^\s*\[enforcer\]")
    return _key_line(lines, start, end, keys[1:]) or start + 1


def _next_header(lines: list[str], start: int, pattern: str) -> int:
    for i in range(start, len(lines)):
        if re.match(pattern, lines[i]):
            return i
    return len(lines)


def _key_line(lines: list[str], start: int, end: int, keys: list[str]) -> int | None:
    """The line of the deepest key found: a sub-table header [rule.a.b], a dotted key
    a.b = or a plain b = inside the region."""
    best: int | None = None
    lo = start
    for depth, key in enumerate(keys):
        table = r"\.".join(re.escape(k) for k in keys[: depth + 1])
        header = rf"^\s*\[rule\.{table}\]"
        found = None
        for i in range(lo, end):
            # [rule.a.b] header; a.b = or a = { b = (dotted or inline keys).
            inline = rf"(^\s*([\w-]+\.)*|[{{,]\s*|\.){re.escape(key)}\s*(=|\.)"
            if re.match(header, lines[i]) or re.search(inline, lines[i]):
                found = i
                break
        if found is None:
            return best
        best, lo = found + 1, found
    return best


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
