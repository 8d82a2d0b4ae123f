"""TLS termination (issue 12, item 1), black-box: real processes, real sockets, real clients.

Certificates are made at test time with trustme. The server gets TLS from each way users have:
`--ssl-certfile/--ssl-keyfile/--ssl-ca-certs`, the `CELLO_TLS_*` variables, `tls:` in cello.yaml
and `app.enable_tls(TlsConfig(...))`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from rawhttp import Conn

trustme = pytest.importorskip("trustme")
from cryptography import x509  # noqa: E402  (trustme's dependency)
from cryptography.hazmat.primitives import serialization  # noqa: E402

HOSTS = ("localhost", "127.0.0.1")
APPS = pathlib.Path(__file__).resolve().parents[1] / "apps"


def write_pair(dir_, name: str, cert, key_format: str = "pkcs8") -> tuple[str, str]:
    """Write `cert`'s chain and key (PKCS#8, or the traditional PKCS#1/SEC1 form) to files."""
    chain = dir_ / f"{name}.crt"
    chain.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    fmt = serialization.PrivateFormat.PKCS8 if key_format == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL
    keyfile = dir_ / f"{name}.key"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    return str(chain), str(keyfile)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    client_ca = trustme.CA()
    out = {"dir": d, "ca": ca, "client_ca": client_ca}
    out["cert"], out["key"] = write_pair(d, "server", ca.issue_cert(*HOSTS))
    out["client_ca_file"] = str(d / "client-ca.pem")
    client_ca.cert_pem.write_to_path(out["client_ca_file"])
    out["client"] = client_ca.issue_cert("alice.example", common_name="alice")
    out["stranger"] = trustme.CA().issue_cert("mallory.example", common_name="mallory")
    return out


def client_ctx(pki, *, cert=None, alpn=None, max_version=None, min_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    return ctx


def https(server, path: str = "/") -> str:
    return f"https://127.0.0.1:{server.port}{path}"


@contextlib.contextmanager
def tls_socket(server, ctx: ssl.SSLContext):
    """A TLS socket to `server` (the handshake happens on entry)."""
    with (
        socket.create_connection((server.host, server.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        yield s


def tls_conn(server, ctx: ssl.SSLContext) -> Conn:
    conn = Conn(server.host, server.port)
    conn.sock = ctx.wrap_socket(conn.sock, server_hostname="localhost")
    return conn


@pytest.fixture(scope="module")
def cli_server(serve, pki):
    return serve("tls_app", "--ssl-certfile", pki["cert"], "--ssl-keyfile", pki["key"])


def test_https_get_with_cli_flags_and_scheme(cli_server, pki):
    with httpx.Client(verify=client_ctx(pki)) as c:
        r = c.get(https(cli_server))
    assert r.status_code == 200
    body = r.json()
    assert body["scheme"] == "https"
    assert body["url"].startswith("https://")
    assert body["http_version"] == "1.1"
    assert body["client_cert"] is None


def test_alpn_offers_h2_and_http11(cli_server, pki):
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        with tls_socket(cli_server, client_ctx(pki, alpn=offered)) as s:
            assert s.selected_alpn_protocol() == chosen
    with httpx.Client(verify=client_ctx(pki), http2=True) as c:
        r = c.get(https(cli_server))
    assert r.http_version == "HTTP/2"
    assert r.json() == {**r.json(), "http_version": "2", "scheme": "https"}


def test_post_body_and_errors_over_https(cli_server, pki):
    payload = bytes(range(256)) * 4000
    with httpx.Client(verify=client_ctx(pki), http2=True) as c:
        r = c.post(https(cli_server, "/echo"), content=payload)
        assert r.status_code == 200
        assert r.json()["size"] == len(payload)
        r = c.get(https(cli_server, "/fail"))
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")


def test_plain_http_on_the_tls_port_is_refused_and_serving_continues(cli_server, pki):
    with Conn(cli_server.host, cli_server.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 400
        assert resp.header("content-type").startswith("application/problem+json")
        assert "HTTPS" in resp.json()["detail"]
        assert conn.read_until_close() == b"", "the connection is closed after the refusal"
    with httpx.Client(verify=client_ctx(pki)) as c:
        assert c.get(https(cli_server)).status_code == 200


def test_tls_versions_are_pinned(serve, pki):
    only13 = serve("tls_app", env={"TLS_APP_CERT": pki["cert"], "TLS_APP_KEY": pki["key"], "TLS_APP_MIN": "1.3"})
    with pytest.raises(ssl.SSLError), tls_socket(only13, client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)):
        pass
    with tls_socket(only13, client_ctx(pki)) as s:
        assert s.version() == "TLSv1.3"
    only12 = serve("tls_app", env={"TLS_APP_CERT": pki["cert"], "TLS_APP_KEY": pki["key"], "TLS_APP_MAX": "1.2"})
    with tls_socket(only12, client_ctx(pki)) as s:
        assert s.version() == "TLSv1.2"


@pytest.mark.parametrize(
    ("key_type", "key_format"),
    [("ECDSA", "pkcs8"), ("ECDSA", "traditional"), ("RSA", "pkcs8"), ("RSA", "traditional")],
)
def test_key_formats_and_chains_via_cello_tls_variables(serve, key_type, key_format, tmp_path):
    """PKCS#8, PKCS#1 RSA and SEC1 EC keys; the leaf is signed by an intermediate, so the client
    (trusting the root only) verifies only if the whole chain is served."""
    root = trustme.CA(key_type=getattr(trustme.KeyType, key_type))
    leaf = root.create_child_ca().issue_cert(*HOSTS)
    assert len(leaf.cert_chain_pems) == 2
    cert, key = write_pair(tmp_path, "leaf", leaf, key_format)
    first = pathlib.Path(key).read_text().splitlines()[0]
    if key_format == "traditional":
        assert first in ("-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----"), first
    server = serve("tls_app", env={"CELLO_TLS_CERT_FILE": cert, "CELLO_TLS_KEY_FILE": key}, fresh=True)
    ctx = ssl.create_default_context()
    root.configure_trust(ctx)
    with httpx.Client(verify=ctx) as c:
        assert c.get(https(server)).json()["scheme"] == "https"
    server.stop()


def test_mtls_required_passes_the_subject_and_refuses_others(serve, pki):
    server = serve("tls_app", "--ssl-certfile", pki["cert"], "--ssl-keyfile", pki["key"], "--ssl-ca-certs",
                   pki["client_ca_file"])  # fmt: skip
    with httpx.Client(verify=client_ctx(pki, cert=pki["client"])) as c:
        r = c.get(https(server))
    assert r.status_code == 200
    expected = x509.load_pem_x509_certificate(pki["client"].cert_chain_pems[0].bytes()).subject.rfc4514_string()
    assert r.json()["client_cert"] == expected
    assert "CN=alice" in r.json()["client_cert"]
    for cert in (None, pki["stranger"]):
        with (
            pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
            httpx.Client(verify=client_ctx(pki, cert=cert)) as c,
        ):
            c.get(https(server))
    with httpx.Client(verify=client_ctx(pki, cert=pki["client"])) as c:
        assert c.get(https(server)).status_code == 200, "still serving"


def test_mtls_optional_with_enable_tls(serve, pki):
    server = serve("tls_app", env={"TLS_APP_CERT": pki["cert"], "TLS_APP_KEY": pki["key"],
                                   "TLS_APP_CA": pki["client_ca_file"]})  # fmt: skip
    with httpx.Client(verify=client_ctx(pki)) as c:
        assert c.get(https(server)).json()["client_cert"] is None
    with httpx.Client(verify=client_ctx(pki, cert=pki["client"])) as c:
        assert "CN=alice" in c.get(https(server)).json()["client_cert"]


def test_cello_yaml_tls_section_and_a_stalled_handshake_is_cut_by_read_header(serve, pki, tmp_path):
    cfg = tmp_path / "cello.yaml"
    cfg.write_text(json.dumps({"tls": {"certPath": pki["cert"], "keyPath": pki["key"]},
                               "timeouts": {"readHeader": 1}}))  # fmt: skip
    server = serve("tls_app", env={"CELLO_CONFIG": str(cfg)})
    with httpx.Client(verify=client_ctx(pki)) as c:
        assert c.get(https(server)).json()["scheme"] == "https"
    for opening in (b"", b"\x16\x03\x01\x02\x00\x01"):  # nothing at all; half a ClientHello
        with socket.create_connection((server.host, server.port), timeout=10) as s:
            s.sendall(opening)
            start = time.monotonic()
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
            took = time.monotonic() - start
        assert 0.5 < took < 4, f"closed after {took:.2f} s (read_header is 1 s)"
    with httpx.Client(verify=client_ctx(pki)) as c:
        assert c.get(https(server)).status_code == 200


def test_first_head_deadline_counts_from_accept_including_the_handshake(serve, pki, tmp_path):
    """Issue 9 item 3: the first request head is due `read_header` after accept, the TLS
    handshake included (not `read_header` after the handshake): a client that spends 0.8 s
    on the handshake and then trickles a head is cut at about 1 s, not 1.8 s."""
    cfg = tmp_path / "cello.yaml"
    cfg.write_text(json.dumps({"tls": {"certPath": pki["cert"], "keyPath": pki["key"]},
                               "timeouts": {"readHeader": 1}}))  # fmt: skip
    server = serve("tls_app", env={"CELLO_CONFIG": str(cfg)})
    with socket.create_connection((server.host, server.port), timeout=10) as raw:
        accepted = time.monotonic()
        time.sleep(0.8)
        with client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")  # the head never ends
            try:
                assert s.recv(1024) == b""
            except (ConnectionResetError, ssl.SSLError):
                pass
            took = time.monotonic() - accepted
    assert 0.9 < took < 1.55, f"closed {took:.2f} s after accept (read_header is 1 s)"


def served_serial(server, pki, ca=None) -> int:
    ctx = ssl.create_default_context()
    (ca or pki["ca"]).configure_trust(ctx)
    with tls_socket(server, ctx) as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_sighup_reloads_the_certificate_without_dropping_connections(serve, pki, tmp_path):
    cert, key = write_pair(tmp_path, "live", pki["ca"].issue_cert(*HOSTS))
    server = serve("tls_app", "--ssl-certfile", cert, "--ssl-keyfile", key, fresh=True)
    old_serial = served_serial(server, pki)
    conn = tls_conn(server, client_ctx(pki))
    assert conn.request("GET", "/").status == 200

    new_ca = trustme.CA()
    write_pair(tmp_path, "live", new_ca.issue_cert(*HOSTS))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            serial = served_serial(server, pki, ca=new_ca)
            break
        except ssl.SSLError:
            assert time.monotonic() < deadline, "the new certificate is not served after SIGHUP"
            time.sleep(0.05)
    assert serial != old_serial
    assert server.alive()
    # The connection opened before the reload is still up and served.
    assert conn.request("GET", "/").status == 200

    # A broken file on reload keeps the current certificate.
    (tmp_path / "live.key").write_text("garbage")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert served_serial(server, pki, ca=new_ca) == serial
        time.sleep(0.1)
    assert conn.request("GET", "/").status == 200
    conn.close()
    assert "TLS reload failed" in server.log() or server.alive()


def test_bad_certificate_files_fail_the_start(tmp_path):
    from cello import App, TlsConfig

    app = App()
    with pytest.raises(ValueError, match="cert_path"):
        app.enable_tls(TlsConfig(tmp_path / "missing.pem", tmp_path / "k.pem"))
    with pytest.raises(TypeError):
        app.enable_tls({"cert_path": "x"})
    # Files that look like PEM but are not: the server refuses to start and says which.
    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
    (tmp_path / "k.pem").write_text("-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n")
    env = {**os.environ, "CELLO_TLS_CERT_FILE": str(tmp_path / "c.pem"), "CELLO_TLS_KEY_FILE": str(tmp_path / "k.pem")}
    proc = subprocess.run([sys.executable, str(APPS / "tls_app.py"), "--port", "0"], env=env, capture_output=True,
                          timeout=30, text=True)  # fmt: skip
    assert proc.returncode != 0
    assert "TLS" in proc.stderr + proc.stdout, proc.stderr[-2000:]
