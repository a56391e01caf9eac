"""The few text formats every cgroup v2 interface file uses (cgroup-v2.rst "Format").

Pure functions: text in, typed values out. ``source`` names the file in error messages.
"""

from __future__ import annotations

import enum
import sys
from typing import Literal, TypeAlias

from runtime.cgroupfs.errors import InvalidLimit, ParseError


class Unlimited(enum.Enum):
    """The kernel's ``max``: a typed value, never -1 or 0."""

    MAX = "max"

    def __str__(self) -> str:
        return "max"


MAX = Unlimited.MAX
IntOrMax: TypeAlias = int | Literal[Unlimited.MAX]


def parse_int(text: str, source: str) -> int:
    """A single non-negative integer, e.g. memory.current."""
    word = text.strip()
    if not is_digits(word):
        raise _error(source, word, "a non-negative integer")
    return int(word)


def parse_int_or_max(text: str, source: str) -> IntOrMax:
    """A single integer or ``max``, e.g. memory.max or pids.max."""
    word = text.strip()
    if word == "max":
        return MAX
    return parse_int(word, source)


def format_int_or_max(value: IntOrMax) -> str:
    return "max" if value is MAX else str(value)


def check_int(what: str, value: object, lo: int, hi: int, allowed: str) -> int:
    """``value`` if it is an int (not a bool) in lo..hi; else InvalidLimit naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidLimit(what, value, allowed)
    return value


def check_int_or_max(what: str, value: object, lo: int, hi: int, allowed: str) -> IntOrMax:
    """As check_int, also letting MAX through."""
    return MAX if value is MAX else check_int(what, value, lo, hi, allowed)


def parse_flat_keyed(text: str, source: str) -> dict[str, int]:
    """``KEY VALUE`` per line (cpu.stat, memory.stat, memory.events, pids.events)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not _is_int(parts[1]):
            raise _error(source, line, "'KEY INTEGER' on every line")
        # Interned: a thousand cgroups' memory.stat share one string per key.
        out[sys.intern(parts[0])] = int(parts[1])
    return out


def parse_nested_keyed(text: str, source: str) -> dict[str, dict[str, str]]:
    """``KEY SUBKEY=VALUE ...`` per line (io.stat, io.max, the pressure files)."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, *pairs = line.split()
        fields: dict[str, str] = {}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            if not sep or not name or not value:
                raise _error(source, line, "'KEY SUBKEY=VALUE ...' on every line")
            fields[name] = value
        out[key] = fields
    return out


def parse_words(text: str) -> list[str]:
    """Space-separated words (cgroup.controllers, cgroup.subtree_control)."""
    return text.split()


def parse_id_list(text: str, source: str) -> frozenset[int]:
    """The kernel's list format ``0-3,5,7-8`` (cpuset.cpus, cpuset.mems). Empty is empty."""
    ids: set[int] = set()
    for chunk in text.strip().split(","):
        if not chunk:
            continue
        first, sep, last = chunk.partition("-")
        if not is_digits(first) or (sep and not is_digits(last)):
            raise _error(source, text.strip(), "a list like '0-3,5'")
        lo, hi = int(first), int(last) if sep else int(first)
        if hi < lo:
            raise _error(source, text.strip(), "ranges written low-high, like '0-3'")
        ids.update(range(lo, hi + 1))
    return frozenset(ids)


def format_id_list(ids: frozenset[int] | set[int]) -> str:
    """Inverse of parse_id_list, folding runs into ranges."""
    parts: list[str] = []
    ordered = sorted(ids)
    start = prev = None
    for n in [*ordered, None]:
        if n is not None and prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None and prev is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    return ",".join(parts)


def is_digits(word: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() then rejects."""
    return word.isascii() and word.isdigit()


def _is_int(word: str) -> bool:
    return is_digits(word.removeprefix("-"))


def _error(source: str, line: str, allowed: str) -> ParseError:
    return ParseError(source, line, allowed)
