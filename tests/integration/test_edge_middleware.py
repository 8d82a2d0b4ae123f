"""Issue 10 (edge middleware, part A), over a real socket: CORS, request ids, security headers
and CSP nonces, compression, conditional requests, body limits and the access-log layer.
The app is tests/apps/edge_app.py; every layer runs in Rust."""

from __future__ import annotations

import gzip
import json
import re

import httpx
import pytest
from obs_helpers import wait_until

pytestmark = pytest.mark.timeout(60)

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def server(serve):
    return serve("edge_app", "--access-log")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


# ---- CORS ------------------------------------------------------------------------------------


def test_preflight_is_answered_without_a_route(client):
    r = client.options(
        "/no-such-route",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type, x-token",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "PUT" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "Content-Type, X-Token"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in r.headers["vary"]


def test_patterns_match_subdomains_and_nothing_else(client):
    r = client.get("/hello", headers={"Origin": "https://a.b.example.org"})
    assert r.headers["access-control-allow-origin"] == "https://a.b.example.org"
    for bad in ("https://example.org", "http://a.example.org", "https://a.example.org.evil.com", "https://evil.com"):
        r = client.get("/hello", headers={"Origin": bad})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers, bad
        assert "Origin" in r.headers["vary"]


def test_disallowed_preflight_gets_no_cors_headers(client):
    r = client.options("/hello", headers={"Origin": "https://evil.com", "Access-Control-Request-Method": "GET"})
    assert not any(k.startswith("access-control-") for k in r.headers)


def test_cors_headers_are_on_framework_errors_too(client):
    h = {"Origin": ORIGIN}
    for method, path, status, kw in [
        ("GET", "/missing", 404, {}),
        ("DELETE", "/hello", 405, {}),
        ("POST", "/upload", 413, {"content": b"x" * 5000}),
        ("GET", "/boom", 500, {}),
    ]:
        r = client.request(method, path, headers=h, **kw)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["access-control-allow-origin"] == ORIGIN, path
        assert r.headers["access-control-allow-credentials"] == "true"
        assert r.headers["access-control-expose-headers"] == "X-Request-ID"


def test_star_with_credentials_is_refused_at_start(tmp_path):
    from cello import App
    from cello.testing import TestClient

    app = App()
    app.enable_cors(origins=["*"], credentials=True)
    with pytest.raises(Exception, match=r"credentials=True is refused"):
        TestClient(app).get("/")


# ---- request id ------------------------------------------------------------------------------


def test_request_id_is_propagated_or_generated(client):
    r = client.get("/id", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.json()["id"] == "abc-123"
    for bad in ("has space", "x" * 200, 'quote"d', ""):
        r = client.get("/id", headers={"X-Request-ID": bad})
        rid = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", rid), rid
        assert r.json()["id"] == rid
    # Framework answers carry it as well.
    r = client.get("/missing")
    assert "x-request-id" in r.headers


def test_request_id_is_in_the_access_log_and_excluded_paths_are_not(server, client):
    client.get("/quiet", headers={"X-Request-ID": "quiet-one"})
    client.get("/hello", headers={"X-Request-ID": "logged-one"})
    line = wait_until(lambda: [x for x in server.log().splitlines() if "logged-one" in x], timeout=10)[0]
    assert '"GET /hello HTTP/1.1" 200' in line
    assert "quiet-one" not in server.log()


# ---- security headers ------------------------------------------------------------------------


def test_security_headers_and_a_fresh_nonce_per_request(client):
    a, b = client.get("/nonce"), client.get("/nonce")
    for r in (a, b):
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        assert r.headers["permissions-policy"] == "camera=(), geolocation=()"
        assert r.headers["cross-origin-opener-policy"] == "same-origin"
    nonces = []
    for r in (a, b):
        m = re.fullmatch(
            r"default-src 'self'; script-src 'self' 'nonce-([A-Za-z0-9+/]+)'", r.headers["content-security-policy"]
        )
        assert m, r.headers["content-security-policy"]
        assert f"nonce='{m.group(1)}'" in r.text
        nonces.append(m.group(1))
    assert nonces[0] != nonces[1]


def test_a_handler_can_override_a_security_header(client):
    r = client.get("/own-frame")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_security_headers_are_on_errors(client):
    r = client.get("/missing")
    assert r.headers["x-frame-options"] == "DENY"


# ---- compression -----------------------------------------------------------------------------


def raw_get(server, path, **headers):
    """A GET whose body is not decoded by the client."""
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        req = c.build_request("GET", path, headers=headers)
        r = c.send(req, stream=True)
        body = b"".join(r.iter_raw())
        r.close()
        return r, body


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_each_coding_round_trips(server, coding):
    r, body = raw_get(server, "/big", **{"Accept-Encoding": coding})
    assert r.headers["content-encoding"] == coding
    assert "Accept-Encoding" in r.headers["vary"]
    if coding == "gzip":
        plain = gzip.decompress(body)
    elif coding == "br":
        brotli = pytest.importorskip("brotli")
        plain = brotli.decompress(body)
    else:
        zstandard = pytest.importorskip("zstandard")
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert plain.decode() == "cello " * 2000
    assert len(body) < 2000


def test_q_values_choose_and_q0_refuses(server):
    r, _ = raw_get(server, "/big", **{"Accept-Encoding": "br;q=0.2, gzip;q=0.9"})
    assert r.headers["content-encoding"] == "gzip"
    r, body = raw_get(server, "/big", **{"Accept-Encoding": "gzip;q=0, br;q=0, zstd;q=0"})
    assert "content-encoding" not in r.headers
    assert body == ("cello " * 2000).encode()
    r, _ = raw_get(server, "/big", **{"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers
    r, _ = raw_get(server, "/big", **{"Accept-Encoding": "*;q=0.5, br;q=0"})
    assert r.headers["content-encoding"] in ("zstd", "gzip")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/hello", {}),  # under min_size
        ("/png", {}),  # incompressible type
        ("/sse", {}),  # event stream
        ("/encoded", {}),  # already encoded: left exactly as the handler sent it
        ("/empty", {}),  # 204
        ("/big", {"Range": "bytes=0-10"}),  # a range request
    ],
)
def test_compression_is_skipped(server, path, headers):
    r, body = raw_get(server, path, **{"Accept-Encoding": "gzip, br", **headers})
    if path == "/encoded":
        assert r.headers["content-encoding"] == "gzip" and body == b"x" * 5000
    else:
        assert "content-encoding" not in r.headers, path


def test_streaming_response_is_compressed_as_it_streams(server, client):
    d = __import__("zlib").decompressobj(16 + 15)
    with (
        httpx.Client(base_url=server.base_url, timeout=20) as c,
        c.stream("GET", "/stream", headers={"Accept-Encoding": "gzip"}) as r,
    ):
        assert r.headers["content-encoding"] == "gzip"
        assert "content-length" not in r.headers
        seen = b""
        chunks = r.iter_raw()
        # The first chunk arrives (and decodes) while the handler still waits.
        while b"first chunk" not in seen:
            seen += d.decompress(next(chunks))
        assert b"second" not in seen
        client.post("/release")
        for chunk in chunks:
            seen += d.decompress(chunk)
    assert seen.endswith(b"second chunk " * 20)


def test_compressed_etag_is_weak(server):
    r, _ = raw_get(server, "/big", **{"Accept-Encoding": "gzip"})
    assert r.headers["etag"].startswith('W/"')


# ---- conditional requests ----------------------------------------------------------------------


def test_etag_and_if_none_match(client):
    r = client.get("/hello")
    tag = r.headers["etag"]
    assert tag.startswith('"')
    r2 = client.get("/hello", headers={"If-None-Match": tag})
    assert r2.status_code == 304
    assert r2.content == b""
    assert r2.headers["etag"] == tag
    # Weak comparison for GET/HEAD.
    assert client.get("/hello", headers={"If-None-Match": f'"nope", W/{tag}'}).status_code == 304
    assert client.head("/hello", headers={"If-None-Match": tag}).status_code == 304
    assert client.get("/hello", headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head("/hello")
    assert head.headers["etag"] == tag and head.content == b""


def test_if_modified_since(client):
    assert client.get("/dated", headers={"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}).status_code == 304
    assert client.get("/dated", headers={"If-Modified-Since": "Tue, 20 Oct 2015 07:28:00 GMT"}).status_code == 200


def test_if_match_guards_unsafe_methods(client):
    tag = client.get("/doc").headers["etag"]
    r = client.put("/doc", headers={"If-Match": '"stale"'})
    assert r.status_code == 412
    assert r.headers["content-type"] == "application/problem+json"
    before = client.get("/doc").json()["version"]
    r = client.put("/doc", headers={"If-Match": tag})
    assert r.status_code == 200
    assert r.json()["version"] == before + 1
    # The old tag is stale now.
    assert client.put("/doc", headers={"If-Match": tag}).status_code == 412


# ---- body limits -----------------------------------------------------------------------------


def test_body_limit_app_wide_and_per_route(client, server):
    assert client.post("/upload", content=b"x" * 4096).json() == {"size": 4096}
    assert client.post("/upload", content=b"x" * 4097).status_code == 413
    for path in ("/small", "/small-async"):
        assert client.post(path, content=b"x" * 16).json() == {"size": 16}
        r = client.post(path, content=b"x" * 17)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"

    # Without Content-Length (chunked), refused while reading.
    def chunks():
        yield b"x" * 10
        yield b"x" * 10

    assert client.post("/small", content=chunks()).status_code == 413


# ---- access log format -------------------------------------------------------------------------


def test_json_access_log_format(serve):
    server = serve("edge_app", "--access-log", env={"EDGE_LOG_FORMAT": "json"})
    httpx.get(server.url("/hello"), headers={"X-Request-ID": "json-line"}, timeout=5)
    httpx.get(server.url("/health/live"), timeout=5)

    def records():
        out = []
        for line in server.log().splitlines():
            start = line.find("{")
            if start >= 0:
                try:
                    out.append(json.loads(line[start:]))
                except ValueError:
                    pass
        return [r for r in out if r.get("request_id") == "json-line"]

    rec = wait_until(records, timeout=10)[0]
    assert rec["method"] == "GET" and rec["path"] == "/hello" and rec["status"] == 200
    assert "/health/live" not in server.log()
