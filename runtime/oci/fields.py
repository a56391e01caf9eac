"""Typed access to decoded config.json values, every failure an OciConfigError naming the JSON
path (``process.rlimits[1].type``), the value and what is allowed.

JSON numbers arrive as Python ints (or floats); booleans are refused where integers are
wanted (``True`` is an int to Python, not to the spec). Ranges are the spec's Go types:
uint32 ids, uint64 rlimits and rates, int64 cgroup values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_MAX_SHOWN = 120  # characters of an offending value quoted in a message


class _Missing:
    def __repr__(self) -> str:
        return "missing"


MISSING: Any = _Missing()


def show(value: object) -> str:
    """A value as a message quotes it: strings in quotes, the rest as JSON; long ones cut."""
    if value is MISSING:
        return "missing"
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class OciConfigError(ValueError):
    """A config.json value corral refuses: "config.json: PATH: VALUE: ALLOWED"."""

    def __init__(self, path: str, value: object, allowed: str) -> None:
        self.path = path
        self.value = value
        self.allowed = allowed
        super().__init__(f"config.json: {path}: {show(value)}: {allowed}")


def join(path: str, key: str | int) -> str:
    """The JSON path of member ``key`` (a name or an index) of ``path``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _NAME.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"  # linux.sysctl["net.ipv4.ip_forward"]
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    """The JSON type of ``value`` as messages name it."""
    for kind, name in ((bool, "boolean"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def wrong_type(path: str, value: object, want: str) -> OciConfigError:
    if value is MISSING:
        return OciConfigError(path, value, f"required: {want}")
    return OciConfigError(path, value, f"must be {want}, not {type_name(value)}")


def obj(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise wrong_type(path, value, "an object")
    return value


def array(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise wrong_type(path, value, "an array")
    return value


def string(value: object, path: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise wrong_type(path, value, "a string")
    if not empty and not value:
        raise OciConfigError(path, value, "must not be empty")
    if "\0" in value:
        raise OciConfigError(path, value, "must not contain a NUL byte")
    return value


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise wrong_type(path, value, "true or false")
    return value


def integer(value: object, path: str, lo: int, hi: int, what: str = "") -> int:
    """An integer within lo..hi (a JSON number without a fraction)."""
    allowed = what or f"an integer {lo}..{hi}"
    if isinstance(value, float):
        # Go's encoding/json (runc) refuses 5.0 or 1e3 for an integer field too.
        raise OciConfigError(
            path, value, f"must be {allowed}, not a number with a fraction or exponent"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(path, value, allowed)
    if not lo <= value <= hi:
        raise OciConfigError(path, value, f"out of range: allowed {allowed}")
    return value


def strings(value: object, path: str) -> tuple[str, ...]:
    return tuple(string(item, join(path, i)) for i, item in enumerate(array(value, path)))


def string_map(value: object, path: str) -> dict[str, str]:
    out = {}
    for key, item in obj(value, path).items():
        out[key] = string(item, join(path, key))
    return out


def check_keys(
    data: Mapping[str, Any], path: str, supported: Iterable[str], refused: Mapping[str, str]
) -> None:
    """Every key of ``data`` must be supported. A key in ``refused`` (a field of the spec
    corral does not implement) is refused with its reason, unless its value is empty (null,
    false, 0, "", [] or {}: the field asks for nothing); any other key is unknown."""
    allowed = set(supported)
    for key, value in data.items():
        if key in allowed:
            continue
        where = join(path, key)
        if key in refused:
            if value in (None, False, 0, "", [], {}) and not isinstance(value, float):
                continue
            raise OciConfigError(where, value, refused[key])
        known = ", ".join(sorted(allowed))
        raise OciConfigError(
            where, value, f"unknown field; {path or 'the top level'} allows {known}"
        )
