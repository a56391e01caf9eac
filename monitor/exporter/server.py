"""The exporter's HTTP server: /metrics, /healthz, the dashboard's JSON API at /api/v1/
(monitor.exporter.api) and a landing page at /.

A scrape takes the exporter's current ``Rendered`` once and writes its bytes, rendered at
most once per snapshot and format, so it costs a dictionary lookup and a socket write and
never races the poller. TLS handshakes run in the connection's own thread (a slow client
cannot stall the accept loop); basic auth applies to every path, as in the exporter-toolkit.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from monitor.exporter import DEFAULT_HOST, DEFAULT_PORT, Exporter
from monitor.exporter.api import JSON_TYPE, PREFIX, Api, ApiProvider
from monitor.exporter.render import CONTENT_TYPES, Format
from monitor.exporter.webconfig import BasicAuth, WebConfig
from monitor.snapshot import Snapshot

log = logging.getLogger("corral.exporter")
HANDSHAKE_SECONDS = 10.0
IDLE_SECONDS = 30.0  # a kept-alive connection idle this long is closed


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (the default host) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT like 127.0.0.1:{DEFAULT_PORT}")
    host = host.removeprefix("[").removesuffix("]") or DEFAULT_HOST
    return host, int(port)


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def negotiate(accept: str | None) -> Format:
    """OpenMetrics when the Accept header ranks application/openmetrics-text at least as
    high as the text format (Prometheus asks for it first); else the text format."""
    best = {Format.OPENMETRICS: 0.0, Format.TEXT: 0.0}
    for item in (accept or "").split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        fmt = Format.OPENMETRICS if media == "application/openmetrics-text" else Format.TEXT
        if fmt is Format.OPENMETRICS or media in ("text/plain", "text/*", "*/*"):
            best[fmt] = max(best[fmt], _quality(params))
    om = best[Format.OPENMETRICS]
    return Format.OPENMETRICS if om > 0 and om >= best[Format.TEXT] else Format.TEXT


def wants_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").split(","):
        coding, *params = item.split(";")
        if coding.strip().lower() in ("gzip", "*") and _quality(params) > 0:
            return True
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        exporter: Exporter,
        web: WebConfig | None,
        provider: ApiProvider | None = None,
    ):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.exporter = exporter
        self.api = Api(self._current, provider)
        self.web = web
        self.auth = BasicAuth(web.users if web else {})
        super().__init__(address, _Handler)

    def _current(self) -> Snapshot | None:
        rendered = self.exporter.current
        return rendered.view.snapshot if rendered is not None else None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line, not socketserver's traceback on stderr (journald would make an
        entry of each of its lines): a client that reset or timed out is routine."""
        error = sys.exc_info()[1]
        peer = client_address[0] if client_address else "?"
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("client %s: %s", peer, error)
        else:
            log.warning("request from %s failed: %s: %s", peer, type(error).__name__, error)

    def finish_request(self, request: Any, client_address: Any) -> None:
        context = self.web.context if self.web else None
        if context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            wrapped = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.debug("TLS handshake with %s failed: %s", client_address[0], e)
            return
        try:  # the wrapped socket owns the fd now; shutdown_request closes only the husk
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK: 40 ms per keep-alive scrape instead of a fraction of one.
    disable_nagle_algorithm = True
    timeout = IDLE_SECONDS
    server_version = "corral"

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        if self.server.auth.enabled and not self.server.auth.check(self.headers["Authorization"]):
            self._send(
                401,
                "text/plain; charset=utf-8",
                b"Unauthorized\n",
                head,
                {"WWW-Authenticate": 'Basic realm="corral"'},
            )
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics(head)
        elif path == "/healthz":
            health = self.server.exporter.health()
            body = (health.reason + "\n").encode()
            self._send(200 if health.ok else 503, "text/plain; charset=utf-8", body, head)
        elif path.startswith(PREFIX):
            self._api(path.removeprefix(PREFIX), head)
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", self._landing(), head)
        else:
            self._send(404, "text/plain; charset=utf-8", b"Not found: try /metrics\n", head)

    def _metrics(self, head: bool) -> None:
        rendered = self.server.exporter.current  # one reference: one whole snapshot
        if rendered is None:
            body = b"no snapshot yet: the first poll has not finished\n"
            self._send(503, "text/plain; charset=utf-8", body, head)
            return
        fmt = negotiate(self.headers["Accept"])
        gzipped = wants_gzip(self.headers["Accept-Encoding"])
        extra = {"Vary": "Accept, Accept-Encoding"}
        if gzipped:
            extra["Content-Encoding"] = "gzip"
        self._send(200, CONTENT_TYPES[fmt], rendered.body(fmt, gzipped), head, extra)

    def _api(self, route: str, head: bool) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        first = {name: values[0] for name, values in query.items()}
        reply = self.server.api.get(route, first, wants_gzip(self.headers["Accept-Encoding"]))
        extra = {"Vary": "Accept-Encoding"}
        if reply.gzipped:
            extra["Content-Encoding"] = "gzip"
        self._send(reply.code, JSON_TYPE, reply.body, head, extra)

    def _landing(self) -> bytes:
        rendered = self.server.exporter.current
        health = self.server.exporter.health()
        cgroups = len(rendered.view.snapshot.sample.cgroups) if rendered else 0
        return LANDING.format(
            cgroups=cgroups, health=html.escape(health.reason), port=DEFAULT_PORT
        ).encode()

    def _send(
        self, code: int, ctype: str, body: bytes, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        configured = self.server.web.headers if self.server.web else {}
        for key, value in {**configured, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>corral exporter</title></head>
<body>
<h1>corral exporter</h1>
<p>Per-cgroup CPU, memory, io, pids and pressure figures for Prometheus.</p>
<ul>
<li><a href="/metrics">/metrics</a>: {cgroups} cgroups (text format, or OpenMetrics by
content negotiation; gzip on request)</li>
<li><a href="/healthz">/healthz</a>: {health}</li>
<li><a href="/api/v1/snapshot">/api/v1/snapshot</a>, /api/v1/history?after=SEQ,
/api/v1/audit?after=UNIX_TIME: JSON for <code>corral top --url</code></li>
</ul>
<p>The metrics are described in docs/metrics.md. Default address 127.0.0.1:{port}.</p>
</body></html>
"""


class MetricsServer:
    """The exporter's server on ``host:port`` (port 0 picks a free one), in a thread.
    ``provider`` gives /api/v1/history and /api/v1/audit their data; /api/v1/snapshot
    serves the exporter's current snapshot with or without it."""

    def __init__(
        self,
        exporter: Exporter,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        web: WebConfig | None = None,
        provider: ApiProvider | None = None,
    ) -> None:
        self._server = _Server((host, port), exporter, web, provider)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        scheme = "https" if self._server.web and self._server.web.context else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="corral-http",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket; handlers are daemon threads."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
