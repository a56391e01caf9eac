"""RemoteSource: `corral top --url http://HOST:PORT` reading a running agent's JSON API
(monitor.exporter.api) over one kept-alive HTTP connection.

Each frame asks /api/v1/history for the snapshots after the last one it has, so its History
holds every poll of the agent (the first request fills the plots' window), and rebuilds
their models from consecutive samples with build_snapshot: the figures are the agent's own.
/api/v1/audit brings the audit entries after the newest one it has.

While the agent is away (refused, timed out, a 5xx, a body that does not parse) every frame
raises SourceDisconnected saying why, and the next attempt waits 0.5 s, then twice as long
each time up to BACKOFF_MAX; a call never waits longer than ``interval``. An agent that
restarted (its seq went back) starts the history afresh.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Sequence
from math import ceil
from typing import Any

from dashboards.tui.sources.base import CannotSeek, Frame, ProcessRow, SourceDisconnected
from enforce.actions import AuditEntry
from enforce.audit import AuditError, from_json
from monitor.exporter import DEFAULT_PORT
from monitor.exporter.api import ApiError, decode_snapshot
from monitor.history import History
from monitor.sample import HostSample

log = logging.getLogger(__name__)
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
AUDIT_KEEP = 1000


class _Down(Exception):
    """Why the agent did not answer as it should (the SourceDisconnected message)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RemoteSource:
    """Frames from the agent at ``url`` (http or https; ``USER:PASSWORD@`` in it is sent as
    basic auth; no port means corral's DEFAULT_PORT), each request bounded by ``timeout``."""

    seekable = False

    def __init__(
        self,
        url: str,
        interval: float = 1.0,
        timeout: float = 2.0,
        *,
        history_seconds: float = 300.0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        if interval <= 0 or timeout <= 0:
            raise ValueError(f"interval {interval!r}, timeout {timeout!r}: expected seconds > 0")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"url {url!r}: the port is not a number 0..65535") from None
        self.interval = interval
        self.timeout = timeout
        self._https, self._host, self._port = parts.scheme == "https", parts.hostname, port
        self._context = context
        self._base = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.label = f"{parts.scheme}://{host}:{port}{self._base}"
        self._history_seconds = history_seconds
        self._conn: http.client.HTTPConnection | None = None
        self._closed = threading.Event()
        self._reset()
        self._audit: deque[AuditEntry] = deque(maxlen=AUDIT_KEEP)
        self._audit_after = 0.0
        self._due = 0.0  # monotonic time of the next request
        self._failures = 0
        self._reason = ""

    def _reset(self) -> None:
        self.history = History(max_age_seconds=self._history_seconds)
        self._seq = 0
        self._prev: HostSample | None = None

    def next_frame(self) -> Frame:
        wait = self._due - time.monotonic()
        if self._closed.wait(max(min(wait, self.interval), 0)):
            raise SourceDisconnected(f"{self.label}: the source was closed")
        if self._failures and time.monotonic() < self._due:
            left = self._due - time.monotonic()
            raise SourceDisconnected(f"{self.label}: {self._reason}; retrying in {ceil(left)}s")
        try:
            self._pull()
        except _Down as e:
            self._close_conn()
            self._failures += 1
            self._reason = str(e)
            backoff = min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX)
            self._due = time.monotonic() + backoff
            raise SourceDisconnected(f"{self.label}: {e}") from None
        self._failures = 0
        self._due = time.monotonic() + self.interval
        latest = self.history.latest()
        assert latest is not None  # _pull raises _Down while there is none
        return Frame(latest, tuple(self.history.snapshots()), tuple(self._audit), "live")

    def _pull(self) -> None:
        data = self._history()
        latest = data.get("latest_seq")
        if self._seq and (latest is None or latest < self._seq):  # the agent restarted
            self._reset()
            data = self._history()
        try:
            for obj in data["snapshots"]:
                snapshot = decode_snapshot(obj, self._prev)
                self.history.append(snapshot)
                self._prev, self._seq = snapshot.sample, snapshot.seq
        except (ApiError, KeyError, TypeError) as e:
            raise _Down(f"the agent's history does not decode: {e}") from None
        if self.history.latest() is None:
            raise _Down("the agent has no snapshot yet (its first poll has not finished)")
        self._pull_audit()

    def _history(self) -> dict[str, Any]:
        """The snapshots after ours; from /api/v1/snapshot when the agent keeps no history
        (served without an API provider: then rates span our own requests)."""
        try:
            return self._get(f"/api/v1/history?after={self._seq}")
        except _Down as e:
            if e.status != 404:
                raise
        data = self._get("/api/v1/snapshot")
        seq = data.get("seq")
        return {"latest_seq": seq, "snapshots": [data] if seq != self._seq else []}

    def _pull_audit(self) -> None:
        """New audit entries; an audit the agent cannot read now is logged, not a
        disconnection (the snapshots are still good)."""
        try:
            data = self._get(f"/api/v1/audit?after={self._audit_after!r}")
        except _Down as e:
            if not e.status:
                raise
            log.warning("%s: the audit is unavailable: %s", self.label, e)
            return
        for obj in data.get("entries", []):
            try:
                entry = from_json(json.dumps(obj))
            except (AuditError, TypeError, ValueError) as e:
                log.warning("%s: skipped an audit entry: %s", self.label, e)
                continue
            self._audit.append(entry)
            self._audit_after = max(self._audit_after, entry.time)

    def _get(self, path: str) -> dict[str, Any]:
        """GET ``path`` as JSON. A kept-alive connection the agent closed meanwhile is
        retried once on a new one (the request is idempotent)."""
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                status, body = self._request(path)
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._close_conn()
                if not reused or attempt == 2:
                    raise _Down(_why(e, self.timeout)) from None
            except (OSError, http.client.HTTPException) as e:
                raise _Down(_why(e, self.timeout)) from None
        try:
            data = json.loads(body)
        except ValueError as e:
            data = e
        if status != 200:
            error = data.get("error", "") if isinstance(data, dict) else ""
            hint = ": check the user and password in the URL" if status == 401 else ""
            raise _Down(f"HTTP {status} for {path}{hint}{': ' + error if error else ''}", status)
        if not isinstance(data, dict):
            what = data if isinstance(data, ValueError) else type(data).__name__
            raise _Down(f"{path}: the body is not a JSON object ({what})")
        return data

    def _request(self, path: str) -> tuple[int, bytes]:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        self._conn.request("GET", self._base + path, headers=self._headers)
        resp = self._conn.getresponse()
        body = resp.read()
        if resp.getheader("Content-Encoding", "") == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as e:
                raise http.client.HTTPException(f"a gzip body that does not inflate: {e}") from e
        return resp.status, body

    def seek(self, frames: int) -> Frame:
        raise CannotSeek(f"{self.label}: a live source cannot move in time")

    def processes(self, cgroup: str) -> Sequence[ProcessRow] | None:
        return None  # the API carries no per-process detail

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._closed.set()
        self._close_conn()


def _why(error: BaseException, timeout: float) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is `corral serve` running there?)"
    if isinstance(error, socket.timeout | TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the agent closed the connection"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower() if error.errno else error.strerror
    return f"{type(error).__name__}: {error}"
