"""The human limit syntax every corral CLI option and policy file shares.

- sizes: ``256M``, ``1.5G``, ``512k``, ``1GiB``, ``1048576`` (bytes), ``max``. Suffixes are
  binary (K = 1024), as docker's ``--memory`` and the kernel's own docs use them.
- CPU: cores (``0.5``, ``2``), ``QUOTA/PERIOD`` in microseconds (``50000/100000``), ``max``.
- io: ``DEVICE KEY=VALUE ...`` where DEVICE is ``MAJ:MIN`` or a block device path
  (``/dev/vda``) and KEY is rbps/wbps (sizes per second) or riops/wiops (counts).

Each parser returns the typed value the writers take, and raises InvalidLimit naming the
input and the allowed forms; nothing here touches a cgroup.
"""

from __future__ import annotations

import math
import os
import re
import stat
from fractions import Fraction

from runtime.cgroupfs.cpu import DEFAULT_PERIOD_US, CpuMax, validate_cpu_max
from runtime.cgroupfs.errors import InvalidLimit
from runtime.cgroupfs.formats import MAX, IntOrMax, is_digits
from runtime.cgroupfs.io import IO_MAX_KEYS, Device, IoMax

SIZE_FORMS = "a size like 256M, 1.5G, 512k, 1GiB or 1048576 (bytes), or 'max'"
CPU_FORMS = "cores like 0.5 or 2, QUOTA/PERIOD in microseconds like 50000/100000, or 'max'"
IO_FORMS = "'DEVICE KEY=VALUE ...' with DEVICE as MAJ:MIN or /dev/NAME, KEY rbps|wbps|riops|wiops"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([kmgtp]?)(i?b?)$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str, what: str = "size") -> IntOrMax:
    """``256M`` -> 268435456; ``max`` -> MAX. Fractions round down to whole bytes."""
    word = str(text).strip()
    if word.lower() == "max":
        return MAX
    m = _SIZE.match(word)
    if not m or (m.group(3) and not m.group(2) and m.group(3).lower() != "b"):
        raise InvalidLimit(what, text, SIZE_FORMS)
    # Fraction keeps "1.5G" and 20-digit byte counts exact, where float would round.
    value = int(Fraction(m.group(1)) * 1024 ** _UNITS[m.group(2).lower()])
    if value >= 1 << 63:
        raise InvalidLimit(what, text, "a size below 8 EiB")
    return value


def format_size(value: IntOrMax) -> str:
    """268435456 -> '256M'; exact binary units only, else bytes."""
    if value is MAX:
        return "max"
    for suffix, power in (("P", 5), ("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        unit = 1024**power
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def parse_cpus(text: str, what: str = "cpus") -> CpuMax:
    """``0.5`` -> CpuMax(50000, 100000); ``20000/50000`` as given; ``max`` unlimited."""
    word = str(text).strip()
    if word.lower() == "max":
        return CpuMax(MAX, DEFAULT_PERIOD_US)
    quota_s, sep, period_s = word.partition("/")
    try:
        if sep:
            if not is_digits(quota_s) or not is_digits(period_s):
                raise ValueError(word)
            value = CpuMax(int(quota_s), int(period_s))
        else:
            cores = float(word)
            if not math.isfinite(cores) or cores <= 0:
                raise ValueError(word)
            value = CpuMax(round(cores * DEFAULT_PERIOD_US), DEFAULT_PERIOD_US)
        return validate_cpu_max(value)
    except (ValueError, InvalidLimit) as e:
        detail = f" ({e.allowed})" if isinstance(e, InvalidLimit) else ""
        raise InvalidLimit(what, text, CPU_FORMS + detail) from None


def format_cpus(value: CpuMax) -> str:
    """CpuMax(50000, 100000) -> '0.5'; a non-default period keeps QUOTA/PERIOD."""
    if value.quota is MAX:
        return "max"
    if value.period == DEFAULT_PERIOD_US:
        # Five decimals are exact for a quota in microseconds over a 100 ms period.
        return f"{value.quota / DEFAULT_PERIOD_US:.5f}".rstrip("0").rstrip(".")
    return f"{value.quota}/{value.period}"


def parse_device(text: str, dev_root: str = "/") -> Device:
    """``8:0`` as is; ``/dev/vda`` via stat(2), which must show a block device."""
    word = str(text).strip()
    if re.fullmatch(r"\d+:\d+", word):
        return Device.parse(word)
    if not word.startswith("/"):
        raise InvalidLimit("device", text, "MAJ:MIN like 8:0, or a block device path like /dev/sda")
    path = os.path.join(dev_root, word.lstrip("/"))
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidLimit("device", text, f"an existing block device ({e.strerror})") from None
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidLimit("device", text, "a block device (this path is not one)")
    return Device(os.major(st.st_rdev), os.minor(st.st_rdev))


def parse_io_limit(text: str, dev_root: str = "/") -> tuple[Device, IoMax]:
    """``/dev/vda wbps=10M riops=100`` -> (Device(254, 0), IoMax(wbps=10485760, riops=100)).

    Keys not given are unlimited: the result is the device's whole io.max line.
    """
    words = str(text).split()
    if len(words) < 2:
        raise InvalidLimit("io limit", text, IO_FORMS)
    device = parse_device(words[0], dev_root)
    values: dict[str, IntOrMax] = {}
    for pair in words[1:]:
        key, sep, raw = pair.partition("=")
        if not sep or key not in IO_MAX_KEYS:
            raise InvalidLimit("io limit", text, IO_FORMS)
        if key in values:
            raise InvalidLimit("io limit", text, f"{key} given twice; " + IO_FORMS)
        values[key] = _io_value(key, raw, text)
    return device, IoMax(**values)


def _io_value(key: str, raw: str, text: str) -> IntOrMax:
    if key.endswith("bps"):
        value = parse_size(raw, f"io limit {key}")
    elif raw == "max":
        value = MAX
    elif is_digits(raw):
        value = int(raw)
    else:
        raise InvalidLimit(f"io limit {key}", raw, "an operation count per second or 'max'")
    if value == 0:
        raise InvalidLimit(f"io limit {key}", raw, "a rate of at least 1 ('max' for none)")
    return value
