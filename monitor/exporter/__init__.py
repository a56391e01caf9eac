"""The Prometheus exporter: the metric catalogue (``metrics``), rendering (``render``), the
HTTP server (``server``) and its TLS/basic-auth web config (``webconfig``).

``Exporter`` is the hand-over point between the poller and the scrapes: the poller publishes
each Snapshot, which replaces the previous one whole (one reference assignment); a scrape
takes the current ``Rendered`` once and serves its bytes, so it never sees half a poll nor
a mix of two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from monitor.exporter.render import ExportView, Format, Rendered
from monitor.exporter.writer import LineCache
from monitor.snapshot import Snapshot

# The fixed, documented default port (docs/metrics.md): in the 9100-9999 range Prometheus
# exporters use, away from 9090 (Prometheus), 9100 (node_exporter) and 8080 (cAdvisor).
DEFAULT_PORT = 9847
DEFAULT_HOST = "127.0.0.1"
STALE_INTERVALS = 3  # /healthz fails once the newest snapshot is older than this many polls


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    reason: str


class Exporter:
    """Holds the newest rendered snapshot. ``publish`` is called by one poller thread;
    ``current`` and ``health`` by any number of scrape threads."""

    def __init__(
        self,
        interval: float,
        *,
        sysfs: str = "/sys",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval {interval!r}: expected seconds > 0")
        self.interval = interval
        self.sysfs = sysfs
        self._clock = clock
        self._lock = threading.Lock()  # only publishers take it
        self._errors: dict[str, int] = {}
        self._current: Rendered | None = None
        self._lines = LineCache()  # every snapshot's renders share it
        self._published_at: float | None = None
        self._last_failure = ""
        self._extra: list[ExtraFamilies] = []

    def add_families(self, source: ExtraFamilies) -> None:
        """Render ``source``'s families (the enforcer's) with every snapshot from now on."""
        with self._lock:
            self._extra.append(source)

    @property
    def current(self) -> Rendered | None:
        return self._current

    def publish(self, snapshot: Snapshot) -> Rendered:
        """Make ``snapshot`` the one every scrape from now on is served."""
        with self._lock:
            for kind, count in snapshot.sample.errors.items():
                self._errors[kind] = self._errors.get(kind, 0) + count
            view = ExportView(snapshot, dict(self._errors), self.interval, self.sysfs)
            rendered = (
                _WithExtra(view, self._lines, self._extra)
                if self._extra
                else Rendered(view, self._lines)
            )
            self._current = rendered
            self._published_at = self._clock()
            self._last_failure = ""
            return rendered

    def poll_failed(self, kind: str, message: str) -> None:
        """A poll raised: count it (served with the next snapshot) and tell /healthz."""
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1
            self._last_failure = message

    def health(self) -> Health:
        published = self._published_at
        failure = f"; last poll failed: {self._last_failure}" if self._last_failure else ""
        if published is None:
            return Health(False, "no snapshot yet: the first poll has not finished" + failure)
        age = self._clock() - published
        limit = STALE_INTERVALS * self.interval
        if age > limit:
            return Health(
                False, f"stale: newest snapshot is {age:.1f}s old (limit {limit:g}s){failure}"
            )
        return Health(True, f"ok: newest snapshot is {age:.1f}s old")


# -- extra families ---------------------------------------------------------------------------
# Families that do not come from the snapshot (the enforcer's counters, enforce.metrics) are
# rendered by their owner: ``source(openmetrics)`` returns whole families as exposition text.
# They are taken at publish time, so a scrape sees them as of the same poll as the rest.
ExtraFamilies = Callable[[bool], bytes]


class _WithExtra(Rendered):
    """A Rendered whose body ends with extra families (before OpenMetrics' ``# EOF``)."""

    def __init__(self, view: ExportView, lines: LineCache, sources: list[ExtraFamilies]) -> None:
        super().__init__(view, lines)
        self._extra_text = {
            fmt: b"".join(source(fmt is Format.OPENMETRICS) for source in sources) for fmt in Format
        }

    def _render(self, fmt: Format, gzipped: bool) -> None:
        if (fmt, False) not in self._bodies:
            super()._render(fmt, False)
            plain = self._bodies[(fmt, False)]
            if fmt is Format.OPENMETRICS:
                plain = plain.removesuffix(b"# EOF\n") + self._extra_text[fmt] + b"# EOF\n"
            else:
                plain += self._extra_text[fmt]
            self._bodies[(fmt, False)] = plain
        super()._render(fmt, gzipped)


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ExportView",
    "Exporter",
    "ExtraFamilies",
    "Format",
    "Health",
    "Rendered",
]
