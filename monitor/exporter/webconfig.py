"""The web config file Prometheus exporters share (prometheus/exporter-toolkit,
docs/web-configuration.md): TLS and basic auth for ``corral serve --web-config FILE``.

Supported: ``tls_server_config`` (cert_file, key_file, client_auth_type, client_ca_file,
min_version, max_version), ``basic_auth_users`` (user: bcrypt hash) and
``http_server_config`` (headers; http2 is accepted and ignored: corral serves HTTP/1.1).
Any other field is refused by name, never silently ignored. Relative file names are taken
from the config file's directory, as the exporter-toolkit does. Every error names the file
and the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

TOP = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_FIELDS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
)
# exporter-toolkit fields corral does not implement: refused rather than ignored.
UNSUPPORTED = {
    "rate_limit": "put a reverse proxy in front of corral to rate-limit",
    "tls_server_config.cert": "give the certificate as cert_file",
    "tls_server_config.key": "give the key as key_file",
    "tls_server_config.client_ca": "give the client CA as client_ca_file",
    "tls_server_config.cipher_suites": "corral uses Python's default cipher suites",
    "tls_server_config.curve_preferences": "corral uses Python's default curves",
    "tls_server_config.prefer_server_cipher_suites": "corral uses Python's default",
    "tls_server_config.client_allowed_sans": "not implemented",
}
# Python's ssl verifies every client certificate it asks for, so Go's RequestClientCert and
# RequireAnyClientCert (ask without verifying) have no equivalent and are refused.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The headers the exporter-toolkit lets a config set, with their allowed values (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


class WebConfigError(ValueError):
    """The web config file is unreadable or wrong; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"


@dataclass(frozen=True, slots=True)
class WebConfig:
    path: Path
    tls: TLSConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    context: ssl.SSLContext | None = None  # built from ``tls``, certificates loaded


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate the file, load the certificates: a config that loads will serve."""
    path = Path(path)
    doc = _read_yaml(path)
    where = _Where(path)
    _refuse_unknown(where, "", doc, TOP)
    tls = _tls(where, doc.get("tls_server_config"))
    users = _users(where, doc.get("basic_auth_users"))
    headers = _http(where, doc.get("http_server_config"))
    context = None if tls is None else ssl_context(where, tls)
    return WebConfig(path, tls, users, headers, context)


class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field_name: str, message: str) -> WebConfigError:
        return WebConfigError(f"{self.path}: {field_name}: {message}")

    def file(self, field_name: str, value: object) -> Path:
        if not isinstance(value, str) or not value:
            raise self.error(field_name, "expected a file name")
        return self.path.parent / value  # an absolute value replaces the directory


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise WebConfigError(f"{path}: cannot read the web config: {reason}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise WebConfigError(f"{path}: not valid YAML{at}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise WebConfigError(f"{path}: expected a mapping of {', '.join(TOP)}")
    return doc


def _refuse_unknown(
    where: _Where, prefix: str, doc: Mapping[Any, Any], known: tuple[str, ...]
) -> None:
    for key in doc:
        name = f"{prefix}{key}"
        if name in UNSUPPORTED:
            raise where.error(name, f"not supported by corral ({UNSUPPORTED[name]})")
        if key not in known:
            raise where.error(name, f"unknown field (allowed: {', '.join(known)})")


def _mapping(where: _Where, name: str, value: object) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error(name, "expected a mapping")
    return value


def _tls(where: _Where, value: object) -> TLSConfig | None:
    doc = _mapping(where, "tls_server_config", value)
    _refuse_unknown(where, "tls_server_config.", doc, TLS_FIELDS)
    if not doc:
        return None
    name = "tls_server_config."
    for required in ("cert_file", "key_file"):
        if required not in doc:
            raise where.error(name + required, "required when tls_server_config is given")
    auth = doc.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise where.error(
            name + "client_auth_type", f"{auth!r} is not one of {', '.join(CLIENT_AUTH)}"
        )
    ca = doc.get("client_ca_file")
    if ca is not None and auth == "NoClientCert":
        raise where.error(
            name + "client_ca_file",
            "given, but client_auth_type is NoClientCert; "
            "set client_auth_type: RequireAndVerifyClientCert",
        )
    if ca is None and auth != "NoClientCert":
        raise where.error(name + "client_ca_file", f"required when client_auth_type is {auth}")
    versions = {k: doc.get(k, d) for k, d in (("min_version", "TLS12"), ("max_version", "TLS13"))}
    for key, version in versions.items():
        if version not in TLS_VERSIONS:
            raise where.error(name + key, f"{version!r} is not one of {', '.join(TLS_VERSIONS)}")
    return TLSConfig(
        cert_file=where.file(name + "cert_file", doc["cert_file"]),
        key_file=where.file(name + "key_file", doc["key_file"]),
        client_auth_type=auth,
        client_ca_file=None if ca is None else where.file(name + "client_ca_file", ca),
        min_version=versions["min_version"],
        max_version=versions["max_version"],
    )


def ssl_context(where: _Where, tls: TLSConfig) -> ssl.SSLContext:
    """A server context with the key pair and client CA loaded (read once, at start)."""
    name = "tls_server_config."
    for key in ("cert_file", "key_file", "client_ca_file"):
        file = getattr(tls, key)
        if file is not None and not file.is_file():
            raise where.error(name + key, f"{file}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as e:
        raise where.error(
            name + "cert_file/key_file", f"cannot load {tls.cert_file} with {tls.key_file}: {e}"
        ) from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as e:
            raise where.error(
                name + "client_ca_file", f"cannot load {tls.client_ca_file}: {e}"
            ) from None
    return context


def _users(where: _Where, value: object) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(where, "basic_auth_users", value).items():
        name = f"basic_auth_users.{user}"
        if not isinstance(user, str) or not user or ":" in user:
            raise where.error(name, "a user name must be a non-empty string without ':'")
        match = BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise where.error(
                name,
                "not a bcrypt hash (like $2y$10$ and 53 more characters, "
                "as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)",
            )
        users[user] = hashed.encode()
    return users


def _http(where: _Where, value: object) -> dict[str, str]:
    doc = _mapping(where, "http_server_config", value)
    _refuse_unknown(where, "http_server_config.", doc, ("http2", "headers"))
    if not isinstance(doc.get("http2", True), bool):
        raise where.error("http_server_config.http2", "expected true or false")
    headers: dict[str, str] = {}
    for header, text in _mapping(where, "http_server_config.headers", doc.get("headers")).items():
        name = f"http_server_config.headers.{header}"
        if header not in HEADERS:
            raise where.error(name, f"cannot be set (allowed: {', '.join(HEADERS)})")
        allowed = HEADERS[header]
        if not isinstance(text, str) or (allowed and text not in allowed):
            raise where.error(name, f"{text!r}: expected {' or '.join(allowed or ('a string',))}")
        if text:
            headers[header] = text
    return headers


class BasicAuth:
    """Checks ``Authorization: Basic ...`` against ``basic_auth_users``.

    bcrypt is slow on purpose (~70 ms at cost 10), so a success is remembered as a salted
    SHA-256 of the password and later requests compare against that in constant time;
    failures are not cached. An unknown user is checked against a dummy hash of the same
    cost so that timing does not tell which users exist. One bcrypt runs at a time.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._salt = secrets.token_bytes(16)
        self._passed: dict[str, bytes] = {}  # user -> digest of the password that passed
        self._bcrypt = threading.Lock()
        cost = int(next(iter(self._users.values()))[4:6]) if self._users else 4
        self._dummy = bcrypt.hashpw(b"corral-dummy", bcrypt.gensalt(cost))

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        creds = parse_basic(header)
        if creds is None:
            return False
        user, password = creds
        digest = hashlib.sha256(self._salt + password).digest()
        passed = self._passed.get(user)
        if passed is not None and hmac.compare_digest(passed, digest):
            return True
        hashed = self._users.get(user)
        with self._bcrypt:
            try:
                ok = bcrypt.checkpw(password, hashed or self._dummy) and hashed is not None
            except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
                ok = False
        if ok:
            self._passed[user] = digest
        return ok


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic base64(user:password)`` header."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
