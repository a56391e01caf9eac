"""The agent's monitoring half: a poller thread that reads every cgroup each ``interval``
and hands each whole Snapshot to the exporter (later: to the enforcer and the dashboard).

One thread polls; the exporter's scrapes run in the HTTP server's threads and only ever
read the newest published snapshot, so nothing here is shared mutable state.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from monitor.exporter import Exporter
from monitor.history import History
from monitor.snapshot import Snapshot

log = logging.getLogger("corral.agent")


class Poller(Protocol):
    """What the agent polls: monitor.collector.Collector, or a recording being replayed."""

    def poll(self) -> Snapshot: ...

    def close(self) -> None: ...


class Agent:
    """Owns ``poller`` from ``start`` until ``stop`` (which closes it). Each snapshot goes to
    the exporter and, when given, to ``history`` (what the dashboard's API serves)."""

    def __init__(
        self, poller: Poller, exporter: Exporter, interval: float, history: History | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval {interval!r}: expected seconds > 0")
        self.poller = poller
        self.exporter = exporter
        self.interval = interval
        self.history = history
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._late = False

    def start(self) -> None:
        """Poll once here, so the exporter has data before it listens, then keep polling
        in a thread. A failing first poll is logged and retried like any other."""
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="corral-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling (a poll in progress finishes first) and close the poller."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the poller did not stop within %.1fs", timeout)
                return
        self.poller.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll_once(self) -> Snapshot | None:
        try:
            snapshot = self.poller.poll()
        except Exception as e:  # a bug or an unreadable root: keep serving, say so
            log.error("poll failed: %s: %s", type(e).__name__, e)
            self.exporter.poll_failed("poll", f"{type(e).__name__}: {e}")
            return None
        self.exporter.publish(snapshot)
        if self.history is not None:
            self.history.append(snapshot)
        return snapshot

    def _run(self) -> None:
        # Ticks on a fixed grid from the start; a poll longer than the interval skips the
        # ticks it overran instead of polling back to back to catch up.
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(next_at - time.monotonic(), 0.0)):
            began = time.monotonic()
            self.poll_once()
            now = time.monotonic()
            next_at += self.interval
            if next_at <= now:
                self._overran(now - began)
                next_at = now + self.interval
            else:
                self._late = False

    def _overran(self, seconds: float) -> None:
        if not self._late:  # once per run of late polls, not once per poll
            log.warning("a poll took %.2fs, longer than the %gs interval", seconds, self.interval)
        self._late = True
