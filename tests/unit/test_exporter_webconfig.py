"""--web-config: TLS (server and client certificates made with Debian's openssl), basic
auth with bcrypt hashes and its cache, response headers, and every refusal's exact words."""

from __future__ import annotations

import base64
import http.client
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
from test_exporter_support import fixture_fs, get, serving, snapshot_of

from monitor.exporter import Exporter
from monitor.exporter.webconfig import BasicAuth, WebConfigError, load_web_config

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
HTPASSWD_HINT = "as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)"


def openssl(*args: str, cwd: Path) -> None:
    """``openssl`` with an EC P-256 key made for every request (fast, unencrypted)."""
    key = EC if args[0] == "req" else []
    subprocess.run(["openssl", *args, *key], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server.pem/key (CN localhost, SAN 127.0.0.1), ca.pem/key, client.pem/key (by ca)."""
    d = tmp_path_factory.mktemp("pki")
    san = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    self_signed = "req -x509 -days 2 -keyout {0}.key -out {0}.pem -subj"
    openssl(*self_signed.format("server").split(), "/CN=localhost", "-addext", san, cwd=d)
    openssl(*self_signed.format("ca").split(), "/CN=corral test CA", cwd=d)
    openssl("req", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=prom", cwd=d)
    sign = "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
    openssl(*sign.split(), "-out", "client.pem", cwd=d)
    return d


def write_config(pki: Path, text: str) -> Path:
    path = pki / "web.yml"
    path.write_text(text)
    return path


def trusting(pki: Path, client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki / "server.pem")
    if client:
        context.load_cert_chain(pki / "client.pem", pki / "client.key")
    return context


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def exporter_with_data(tmp_path: Path) -> Exporter:
    exporter = Exporter(1.0)
    exporter.publish(snapshot_of(fixture_fs(tmp_path)))
    return exporter


def test_tls_serves_https_and_refuses_plain_http(pki: Path, tmp_path: Path) -> None:
    web = load_web_config(
        write_config(pki, "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
    )
    with serving(exporter_with_data(tmp_path), web) as server:
        assert server.url.startswith("https://127.0.0.1:")
        reply = get(server.url, context=trusting(pki))
        plain = server.url.replace("https://", "http://")
        with pytest.raises((http.client.HTTPException, OSError)):
            get(plain)
        again = get(server.url, "/healthz", context=trusting(pki))  # the server survived
    assert reply.status == 200 and reply.body.startswith(b"# HELP corral_")
    assert again.status == 200


def test_tls_client_certificates_are_required_and_verified(pki: Path, tmp_path: Path) -> None:
    web = load_web_config(
        write_config(
            pki,
            "tls_server_config:\n  cert_file: server.pem\n"
            "  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: ca.pem\n",
        )
    )
    with serving(exporter_with_data(tmp_path), web) as server:
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
            get(server.url, context=trusting(pki))
        reply = get(server.url, context=trusting(pki, client=True))
    assert reply.status == 200


def test_basic_auth_good_bad_and_missing(pki: Path, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    y_hashed = "$2y$" + hashed[4:]  # htpasswd's prefix
    path = write_config(
        pki,
        f"basic_auth_users:\n  prom: '{hashed}'\n  ops: '{y_hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    )
    with serving(exporter_with_data(tmp_path), load_web_config(path)) as server:
        good = get(server.url, headers=basic("prom", "s3cret"))
        other = get(server.url, "/healthz", headers=basic("ops", "s3cret"))
        bad = get(server.url, headers=basic("prom", "s3cret!"))
        unknown = get(server.url, headers=basic("eve", "s3cret"))
        missing = get(server.url, "/healthz")
        garbled = get(server.url, headers={"Authorization": "Basic !!notbase64"})
    assert (good.status, other.status) == (200, 200)
    assert good.headers["x-frame-options"] == "deny"
    for reply in (bad, unknown, missing, garbled):
        assert reply.status == 401
        assert reply.headers["www-authenticate"] == 'Basic realm="corral"'
        assert b"corral_" not in reply.body


def test_successful_checks_are_cached_and_compared_in_constant_time() -> None:
    auth = BasicAuth({"prom": bcrypt.hashpw(b"pw", bcrypt.gensalt(10))})
    header = basic("prom", "pw")["Authorization"]
    began = time.perf_counter()
    assert auth.check(header)
    first = time.perf_counter() - began
    began = time.perf_counter()
    assert all(auth.check(header) for _ in range(200))
    cached = (time.perf_counter() - began) / 200
    assert first > 0.01  # bcrypt at cost 10 really ran
    assert cached < first / 100, (first, cached)
    assert not auth.check(basic("prom", "pw2")["Authorization"])  # no cache by user alone
    assert not auth.check(basic("prom", "x" * 100)["Authorization"])  # over bcrypt's 72 bytes
    assert auth.check(header)


BAD = [
    ("foo: 1", "foo: unknown field (allowed: tls_server_config, http_server_config, "
               "basic_auth_users)"),
    ("rate_limit: {interval: 1s}", "rate_limit: not supported by corral (put a reverse proxy in "
                                   "front of corral to rate-limit)"),
    ("- a", "expected a mapping of tls_server_config, http_server_config, basic_auth_users"),
    ("tls_server_config: [", "not valid YAML at line 2, column 1"),
    ("tls_server_config: {cert_file: server.pem}",
     "tls_server_config.key_file: required when tls_server_config is given"),
    ("tls_server_config: {cert_file: server.pem, key_file: server.key, cipher_suites: [x]}",
     "tls_server_config.cipher_suites: not supported by corral (corral uses Python's default "
     "cipher suites)"),
    ("tls_server_config: {cert_file: server.pem, key_file: server.key, "
     "client_auth_type: RequireAnyClientCert}",
     "tls_server_config.client_auth_type: 'RequireAnyClientCert' is not one of NoClientCert, "
     "VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
    ("tls_server_config: {cert_file: server.pem, key_file: server.key, client_ca_file: ca.pem}",
     "tls_server_config.client_ca_file: given, but client_auth_type is NoClientCert; set "
     "client_auth_type: RequireAndVerifyClientCert"),
    ("tls_server_config: {cert_file: server.pem, key_file: server.key, "
     "client_auth_type: VerifyClientCertIfGiven}",
     "tls_server_config.client_ca_file: required when client_auth_type is "
     "VerifyClientCertIfGiven"),
    ("tls_server_config: {cert_file: server.pem, key_file: server.key, min_version: TLS14}",
     "tls_server_config.min_version: 'TLS14' is not one of TLS10, TLS11, TLS12, TLS13"),
    ("tls_server_config: {cert_file: 7, key_file: server.key}",
     "tls_server_config.cert_file: expected a file name"),
    ("tls_server_config: {cert_file: nothere.pem, key_file: server.key}",
     "tls_server_config.cert_file: {dir}/nothere.pem: no such file"),
    ("basic_auth_users: {prom: plaintext}",
     "basic_auth_users.prom: not a bcrypt hash (like $2y$10$ and 53 more characters, "
     + HTPASSWD_HINT),
    ("basic_auth_users: {'a:b': x}",
     "basic_auth_users.a:b: a user name must be a non-empty string without ':'"),
    ("basic_auth_users: [prom]", "basic_auth_users: expected a mapping"),
    ("http_server_config: {headers: {X-Frame-Options: allow}}",
     "http_server_config.headers.X-Frame-Options: 'allow': expected deny or sameorigin"),
    ("http_server_config: {headers: {Server: nginx}}",
     "http_server_config.headers.Server: cannot be set (allowed: Strict-Transport-Security, "
     "X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"),
    ("http_server_config: {http2: maybe}", "http_server_config.http2: expected true or false"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_bad_config_files_are_refused_with_the_field_named(
    pki: Path, text: str, message: str
) -> None:
    path = write_config(pki, text + "\n")
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    assert str(err.value) == f"{path}: " + message.format(dir=pki)


def test_unloadable_files_and_a_missing_config(pki: Path) -> None:
    mismatched = "tls_server_config: {cert_file: server.pem, key_file: ca.key}\n"
    with pytest.raises(WebConfigError) as err:
        load_web_config(write_config(pki, mismatched))
    assert str(err.value).startswith(
        f"{pki}/web.yml: tls_server_config.cert_file/key_file: cannot load {pki}/server.pem "
        f"with {pki}/ca.key: [X509: KEY_VALUES_MISMATCH]"
    )
    with pytest.raises(WebConfigError) as err:
        load_web_config(pki / "absent.yml")
    assert (
        str(err.value) == f"{pki}/absent.yml: cannot read the web config: No such file or directory"
    )
    empty = load_web_config(write_config(pki, ""))
    assert (empty.tls, dict(empty.users), empty.context) == (None, {}, None)
