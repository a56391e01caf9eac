"""The enforcer's audit log: one JSON object per line, one line per action the actuator saw.

Each line is written with a single write(2) on a file opened O_APPEND, so lines from several
writers (the agent and a standalone ``corral enforce``) never interleave mid-line: the
kernel positions and writes an O_APPEND write atomically for regular files. The last
``keep`` entries are also held in memory for the dashboard and the exporter.

A line holds the AuditEntry's fields with the enums as their values::

    {"time": 1764375600.25, "rule": "web", "controller": "memory_pressure",
     "cgroup": "corral/web", "file": "memory.high", "old": "536870912", "new": "541200000",
     "mode": "enforce", "outcome": "applied", "reason": "...", "inputs": {...}}
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enforce.actions import AuditEntry, Mode, Outcome

DEFAULT_AUDIT_LOG = "/var/log/corral/audit.jsonl"
DEFAULT_KEEP = 1000
_FIELDS = ("time", "rule", "controller", "cgroup", "file", "old", "new", "mode", "outcome")


class AuditError(ValueError):
    """An audit line that is not an AuditEntry; names the line and the field."""


def to_json(entry: AuditEntry) -> str:
    """The entry as one line of JSON (no newline; keys in a fixed order)."""
    data: dict[str, Any] = {
        "time": entry.time,
        "rule": entry.rule,
        "controller": entry.controller,
        "cgroup": entry.cgroup,
        "file": entry.file,
        "old": entry.old,
        "new": entry.new,
        "mode": entry.mode.value,
        "outcome": entry.outcome.value,
        "reason": entry.reason,
        "inputs": dict(entry.inputs),
    }
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


def from_json(line: str) -> AuditEntry:
    """The AuditEntry of one line written by ``to_json``; AuditError names what is wrong."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise AuditError(f"audit line {line[:80]!r}: not JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise AuditError(f"audit line {line[:80]!r}: expected a JSON object")
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise AuditError(f"audit line {line[:80]!r}: missing {', '.join(missing)}")
    try:
        return AuditEntry(
            time=float(data["time"]),
            rule=_text(data, "rule"),
            controller=_text(data, "controller"),
            cgroup=_text(data, "cgroup"),
            file=_text(data, "file"),
            old=None if data["old"] is None else _text(data, "old"),
            new=_text(data, "new"),
            mode=Mode(data["mode"]),
            outcome=Outcome(data["outcome"]),
            reason=str(data.get("reason", "")),
            inputs=_inputs(data.get("inputs", {})),
        )
    except (TypeError, ValueError) as e:
        raise AuditError(f"audit line {line[:80]!r}: {e}") from None


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} {value!r}: expected a string")
    return value


def _inputs(value: object) -> dict[str, float | int | str]:
    if not isinstance(value, dict):
        raise ValueError(f"inputs {value!r}: expected an object")
    out: dict[str, float | int | str] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            raise ValueError(f"inputs.{key} {item!r}: expected a number or a string")
        out[str(key)] = item
    return out


class AuditLog:
    """Appends entries to ``path`` (None: memory only) and keeps the last ``keep``.

    The file (and its directory) is created on the first write; ``fsync=True`` makes each
    line durable before ``write`` returns. Thread-safe."""

    def __init__(self, path: str | None, keep: int = DEFAULT_KEEP, *, fsync: bool = False):
        if keep < 1:
            raise ValueError(f"keep {keep}: expected at least 1 entry")
        self.path = path
        self.fsync = fsync
        self._recent: deque[AuditEntry] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def write(self, entry: AuditEntry) -> None:
        """Append ``entry``: one write(2) of one line, then remember it."""
        with self._lock:
            if self.path is not None:
                data = (to_json(entry) + "\n").encode()
                fd = self._open()
                written = os.write(fd, data)
                if written != len(data):  # a full disk: say so rather than leave half a line
                    raise OSError(errno.ENOSPC, f"{self.path}: short write of an audit line")
                if self.fsync:
                    os.fsync(fd)
            self._recent.append(entry)

    def recent(self) -> list[AuditEntry]:
        """The last ``keep`` entries written, oldest first."""
        with self._lock:
            return list(self._recent)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> int:
        if self._fd is None:
            assert self.path is not None
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            try:
                self._fd = os.open(self.path, flags, 0o640)
            except OSError as e:
                raise OSError(e.errno, f"audit log {self.path}: {e.strerror}") from None
        return self._fd


def read_audit(path: str, since: float | None = None) -> list[AuditEntry]:
    """Every entry of the log at ``path`` (oldest first), those at or after ``since`` only
    when given. A missing file is an empty log; a torn last line (a writer killed mid-write
    cannot leave one, but a full disk can) is ignored; any other bad line raises AuditError
    naming its line number."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    out: list[AuditEntry] = []
    last = len(lines) - 1
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = from_json(line)
        except AuditError as e:
            if number - 1 == last:  # no newline yet: an unfinished line
                break
            raise AuditError(f"{path}:{number}: {e}") from None
        if since is None or entry.time >= since:
            out.append(entry)
    return out
