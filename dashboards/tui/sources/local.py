"""LocalSource: `corral top` on this host, with an in-process collector (monitor.collector)
reading the cgroup2 files itself, a History of its snapshots for the plots, the enforcer's
audit log tailed from its file, and each cgroup's processes from cgroup.procs and /proc.

Everything here runs in the app's worker thread: a poll reads a few files per cgroup
(kept-open fds and pread), so a frame costs the dashboard a millisecond or so per hundred
cgroups, not a fork of anything.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence

from dashboards.tui.sources.base import CannotSeek, Frame, ProcessRow, SourceDisconnected
from enforce.actions import AuditEntry
from enforce.audit import DEFAULT_AUDIT_LOG, AuditError, from_json
from monitor.collector import Collector, CollectorConfig
from monitor.history import History
from monitor.processes import ProcessSampler
from runtime.cgroupfs import CgroupFS

log = logging.getLogger(__name__)
AUDIT_KEEP = 1000  # entries a frame carries, the newest
TAIL_START_BYTES = 4 << 20  # a long log is read from this far before its end on first sight
FIRST_RATES_SECONDS = 0.25  # the first frame polls twice this far apart, so it has rates


class AuditTail:
    """New complete lines of a JSON-lines audit log (enforce.audit), as ``tail -F`` would:
    a log that does not exist yet is empty; one rotated or truncated (another inode, or
    shorter than what was read) is read again from its start. A line not yet ended by its
    newline waits for the next read; a line that does not parse is logged and skipped."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.skipped = 0  # lines that did not parse
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""

    def read(self) -> list[AuditEntry]:
        try:
            st = os.stat(self.path)
        except OSError:  # absent (no enforcer yet) or unreadable: nothing to show
            self.close()
            return []
        inode = (st.st_dev, st.st_ino)
        if self._fd is None or inode != self._inode or st.st_size < self._offset:
            self._reopen(inode, st.st_size)
        assert self._fd is not None
        chunks = []
        while chunk := os.pread(self._fd, 1 << 20, self._offset):
            chunks.append(chunk)
            self._offset += len(chunk)
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        return [entry for line in lines if (entry := self._parse(line)) is not None]

    def _reopen(self, inode: tuple[int, int], size: int) -> None:
        first = self._fd is None and self._inode is None
        self.close()
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._inode = inode
        self._offset = 0
        if first and size > TAIL_START_BYTES:  # skip to the first whole line near the end
            self._offset = size - TAIL_START_BYTES
            head = os.pread(self._fd, TAIL_START_BYTES, self._offset)
            self._offset += head.find(b"\n") + 1

    def _parse(self, line: bytes) -> AuditEntry | None:
        if not line.strip():
            return None
        try:
            return from_json(line.decode("utf-8", "replace"))
        except AuditError as e:
            self.skipped += 1
            log.warning("%s: skipped a line: %s", self.path, e)
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._partial = b""


class LocalSource:
    """Frames from a Collector polling ``fs`` (default: this host's cgroup2 mount) every
    ``interval`` seconds; plots over the last ``history_seconds``; the audit from
    ``audit_log`` (None: no audit)."""

    seekable = False

    def __init__(
        self,
        fs: CgroupFS | None = None,
        interval: float = 1.0,
        audit_log: str | os.PathLike[str] | None = DEFAULT_AUDIT_LOG,
        history_seconds: float = 300.0,
        *,
        config: CollectorConfig | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval {interval!r}: expected seconds > 0")
        if history_seconds <= 0:
            raise ValueError(f"history_seconds {history_seconds!r}: expected seconds > 0")
        self.fs = fs if fs is not None else CgroupFS.discover()
        self.label = "local"
        self.interval = interval
        self.history = History(max_age_seconds=history_seconds)
        self.collector = Collector(self.fs, config)
        self._tail = AuditTail(audit_log) if audit_log is not None else None
        self._audit: deque[AuditEntry] = deque(maxlen=AUDIT_KEEP)
        self._processes = ProcessSampler(self.fs)
        self._process_lock = threading.Lock()  # the detail screen may ask from its own worker
        self._closed = threading.Event()
        self._due: float | None = None  # monotonic time of the next poll; None: at once

    def next_frame(self) -> Frame:
        """Poll when ``interval`` has passed since the last poll (at once the first time,
        then again FIRST_RATES_SECONDS later so the first frame has rates)."""
        first = self._due is None
        if self._due is not None and self._closed.wait(max(self._due - time.monotonic(), 0)):
            raise SourceDisconnected("local: the source was closed")
        self._due = time.monotonic() + self.interval
        try:
            if first:
                self.history.append(self.collector.poll())
                self._closed.wait(min(FIRST_RATES_SECONDS, self.interval))
            snapshot = self.collector.poll()
        except Exception as e:  # a closed collector, an unreadable root: say it, keep trying
            raise SourceDisconnected(f"local: the poll failed: {type(e).__name__}: {e}") from e
        self.history.append(snapshot)
        if self._tail is not None:
            self._audit.extend(self._tail.read())
        return Frame(snapshot, tuple(self.history.snapshots()), tuple(self._audit), "live")

    def seek(self, frames: int) -> Frame:
        raise CannotSeek("local: a live source cannot move in time (use corral top --replay)")

    def processes(self, cgroup: str) -> Sequence[ProcessRow] | None:
        """The processes directly in ``cgroup`` (cgroup.procs) with their CPU in cores since
        the previous call for the same process (0.0 on first sight, as top's first screen)."""
        with self._process_lock:
            infos = self._processes.sample(cgroup)
        return [
            ProcessRow(
                pid=p.pid,
                user=p.user if p.user is not None else "-",
                command=p.command,
                rss_bytes=p.rss_bytes or 0,
                cpu_cores=(p.cpu_percent or 0.0) / 100.0,
            )
            for p in infos
        ]

    def close(self) -> None:
        self._closed.set()
        self.collector.close()
        if self._tail is not None:
            self._tail.close()
