"""Pressure stall information: {cpu,memory,io}.pressure (accounting/psi.rst).

Two lines, ``some`` and ``full``, each with avg10/avg60/avg300 (percent of wall time) and
``total`` (microseconds stalled, monotonic). cpu ``full`` exists since 5.13 at cgroup level;
the kernel writes zeros there for the root.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.cgroupfs.errors import ParseError
from runtime.cgroupfs.formats import parse_nested_keyed
from runtime.cgroupfs.fs import CgroupFS

RESOURCES = ("cpu", "memory", "io")


@dataclass(frozen=True, slots=True)
class PressureLine:
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


@dataclass(frozen=True, slots=True)
class Pressure:
    some: PressureLine
    full: PressureLine | None


def parse_pressure(text: str, source: str = "pressure") -> Pressure:
    lines = parse_nested_keyed(text, source)
    if "some" not in lines:
        raise ParseError(source, text[:80], "a 'some avg10=.. avg60=.. avg300=.. total=..' line")
    full = lines.get("full")
    return Pressure(
        some=_line(lines["some"], source), full=None if full is None else _line(full, source)
    )


def _line(fields: dict[str, str], source: str) -> PressureLine:
    try:
        return PressureLine(
            avg10=float(fields["avg10"]),
            avg60=float(fields["avg60"]),
            avg300=float(fields["avg300"]),
            total_usec=int(fields["total"]),
        )
    except (KeyError, ValueError):
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        raise ParseError(source, shown, "avg10=F avg60=F avg300=F total=N") from None


def read_pressure(fs: CgroupFS, cgroup: str, resource: str) -> Pressure | None:
    """``resource``.pressure; None when PSI is disabled or the kernel lacks it.

    With psi=0 (or CONFIG_PSI_DEFAULT_DISABLED) the files exist but reads fail EOPNOTSUPP,
    which CgroupFS.read reports as absent.
    """
    if resource not in RESOURCES:
        raise ValueError(f"pressure resource {resource!r}: expected one of {RESOURCES}")
    return fs.read_as(cgroup, f"{resource}.pressure", parse_pressure)
