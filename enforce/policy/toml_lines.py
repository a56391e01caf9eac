"""TOML files validated by pydantic, with errors that name FILE:LINE, the key path, the bad
value and what is allowed: shared by the policy loader (enforce.policy.load) and the agent's
configuration (corral.agent.config).

tomllib keeps no positions, so the line of an offending key is found again in the text: its
table's header (``[a]``, ``[a.b]``), then the key inside that table, as a plain key
(``b =``), a dotted key (``a.b =``) or an inline table (``a = { b = ...}``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class LocatedError(ValueError):
    """str() = "FILE:LINE: key.path: bad value ...: allowed ..."; ``errors`` holds every such
    line when there are several."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


def read_toml(path: Path, what: str, error: type[LocatedError]) -> tuple[dict[str, Any], str]:
    """``path`` parsed, and its text (to find lines in). Raises ``error`` naming the file
    and, for bad TOML, the line tomllib reports."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error([f"{path}: cannot read the {what}: {e}"]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line L, column C)": move the position to the front.
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)$", msg)
        line = m[1] if m else "1"
        detail = msg[: m.start()].strip() if m else msg
        raise error([f"{path}:{line}: not valid TOML: {detail}"]) from None


def describe(err: Any, source: str, line: int, root: type[BaseModel], root_name: str) -> str:
    """One pydantic error as "SOURCE:LINE: field.path: bad value V: allowed ..."."""
    loc = tuple(err["loc"])
    field = field_path(loc) or root_name
    if err["type"] == "extra_forbidden":
        return f"{source}:{line}: {field}: unknown key: allowed keys {allowed_keys(root, loc[:-1])}"
    if err["type"] == "missing":
        return f"{source}:{line}: {field}: missing: this key is required"
    msg = allowed(err)
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


def allowed(err: Any) -> str:
    """pydantic's message turned into "allowed: ..." (ours already say what is allowed)."""
    template = _BOUNDS.get(err["type"])
    if template is not None:
        return "allowed: " + template.format(**err.get("ctx", {}))
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "allowed" in msg:
        return msg
    return f"allowed: {msg[0].lower()}{msg[1:]}" if msg else "allowed: see the schema"


def field_path(loc: tuple[Any, ...]) -> str:
    """("rule", 0, "memory", "max") -> "rule[0].memory.max" ("" for the whole file)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("tagged-union",):
            continue
        else:
            out += ("." if out else "") + part
    return out


def allowed_keys(root: type[BaseModel], loc: tuple[Any, ...], hidden: str = "source") -> str:
    """The keys the model at ``loc`` below ``root`` accepts (``hidden`` is not a key)."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        info = fields.get(part)
        nxt = _model_in(info.annotation) if info is not None else None
        if nxt is None:
            break
        model = nxt
    return ", ".join((f.alias or n) for n, f in model.model_fields.items() if n != hidden)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X | None`` or ``tuple[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def line_of(text: str, pattern: str, start: int = 0, end: int | None = None) -> int:
    """The first line (1-based) in [start, end) matching ``pattern``, else start + 1."""
    lines = text.splitlines()
    end = len(lines) if end is None else end
    for i in range(start, end):
        if re.search(pattern, lines[i]):
            return i + 1
    return start + 1


def next_header(lines: list[str], start: int, pattern: str) -> int:
    """The index of the first line from ``start`` matching ``pattern`` (a table header)."""
    for i in range(start, len(lines)):
        if re.match(pattern, lines[i]):
            return i
    return len(lines)


def key_line(lines: list[str], start: int, end: int, keys: Sequence[str], table: str) -> int | None:
    """The line of the deepest of ``keys`` found in lines [start, end): a sub-table header
    ``[TABLE.a.b]``, a dotted key ``a.b =`` or a plain ``b =`` (also inside ``{ }``)."""
    best: int | None = None
    lo = start
    for depth, key in enumerate(keys):
        dotted = r"\.".join(re.escape(k) for k in keys[: depth + 1])
        header = rf"^\s*\[{re.escape(table)}\.{dotted}\]" if table else rf"^\s*\[{dotted}\]"
        inline = rf"(^\s*([\w-]+\.)*|[{{,]\s*|\.){re.escape(key)}\s*(=|\.)"
        found = None
        for i in range(lo, end):
            if re.match(header, lines[i]) or re.search(inline, lines[i]):
                found = i
                break
        if found is None:
            return best
        best, lo = found + 1, found
    return best


def table_line(text: str, loc: tuple[Any, ...]) -> int:
    """Best line for ``loc`` in a file of plain tables: a top-level key before the first
    header, else the key inside its ``[table]``, else that table's header, else line 1."""
    keys = [p for p in loc if isinstance(p, str) and not p.startswith("function-")]
    lines = text.splitlines()
    first = next_header(lines, 0, r"^\s*\[")
    if not keys:
        return 1
    found = key_line(lines, 0, first, keys, "")  # top-level, dotted or inline
    if found is not None:
        return found
    start = line_of(text, rf"^\s*\[{re.escape(keys[0])}\]") - 1
    if not re.match(rf"^\s*\[{re.escape(keys[0])}\]", lines[start] if lines else ""):
        return 1
    end = next_header(lines, start + 1, r"^\s*\[")
    return key_line(lines, start + 1, end, keys[1:], keys[0]) or start + 1
