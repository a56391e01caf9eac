"""The duration syntax every corral option shares: ``1.5`` or ``1.5s``, ``500ms``, ``2m``,
``1h`` (seconds when no unit is given)."""

from __future__ import annotations

import re

import click

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")


def parse_duration(
    text: str, what: str, low: float = 0.0, high: float | None = None, zero_ok: bool = False
) -> float:
    """Seconds, refused with an error naming ``what`` unless low <= value <= high; zero only
    with ``zero_ok`` (an interval of 0 would spin)."""
    match = _DURATION.fullmatch(text)
    value = float(match[1]) * UNITS[match[2] or "s"] if match else None
    too_low = value is not None and (value < low or (value == 0 and not zero_ok))
    if value is None or too_low or (high is not None and value > high):
        bounds = f" from {low:g} s" if low else (" from 0 s" if zero_ok else " above 0")
        bounds += f" to {high:g} s" if high is not None else ""
        raise click.BadParameter(
            f"{text!r}: expected a duration{bounds}, like 1s, 500ms, 2m or 1.5", param_hint=what
        )
    return value
