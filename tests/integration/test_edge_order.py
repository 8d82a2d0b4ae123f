"""Issue 10, "Order and cost" and the sub-clauses the per-layer tests leave open, over a real
socket with every edge layer on one app (tests/apps/edge_full_app.py): request id and CORS
outermost so their headers are on every rejection (404/405/413/429/500/503) and on cache hits;
compression over cache hits; the cache before the breaker and the breaker before Python;
Python middleware innermost and only on Python routes; 304s that keep the compressed 200's
weak ETag; a CSP nonce page never cached; timeouts counted by the breaker; the request id
bounds, in the access log (template format) and on the server span."""

from __future__ import annotations

import gzip
import re

import httpx
import pytest
from obs_helpers import wait_until
from rawhttp import assert_problem

pytestmark = pytest.mark.timeout(90)

ORIGIN = "https://app.example.com"
JS = b"console.log('edge order');\n" * 40


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge-static")
    (root / "app.js").write_bytes(JS)
    return root


@pytest.fixture(scope="module")
def server(serve, static_dir):
    return serve("edge_full_app", "--access-log", env={"EDGE_STATIC": str(static_dir)})


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=20) as c:
        yield c


def calls(client, key):
    return client.get("/calls").json().get(key, 0)


def assert_outer_layers(r, what):
    """CORS, security headers and the request id: the outermost layers' marks."""
    h = r.headers
    assert h.get("access-control-allow-origin") == ORIGIN, (what, dict(h))
    assert h.get("access-control-allow-credentials") == "true", what
    assert "Origin" in h.get("vary", ""), what
    assert h.get("x-frame-options") == "DENY", what
    assert h.get("content-security-policy", "").startswith("default-src 'none'; script-src 'self' 'nonce-"), what
    assert re.fullmatch(r"[0-9a-f-]{36}|rid-[a-z0-9-]+", h.get("x-request-id", "")), what


def raw(server, path, **headers):
    """GET without decoding the body."""
    with httpx.Client(base_url=server.base_url, timeout=20) as c:
        r = c.send(c.build_request("GET", path, headers=headers), stream=True)
        body = b"".join(r.iter_raw())
        r.close()
        return r, body


def test_every_rejection_and_cache_hit_carries_the_outer_layers(client):
    h = {"Origin": ORIGIN}
    # 404 and 405 (router), 413 (body limit), 500 (handler)
    for method, path, status, kw in [
        ("GET", "/missing", 404, {}),
        ("DELETE", "/hello", 405, {}),
        ("POST", "/upload", 413, {"content": b"x" * 2048}),
        ("GET", "/boom", 500, {}),
    ]:
        r = client.request(method, path, headers=h, **kw)
        assert_problem(r, status)
        assert_outer_layers(r, path)
    # 429 (rate limit): the first request passes, the second is refused
    assert client.get("/limited", headers=h).status_code == 200
    r = client.get("/limited", headers=h)
    assert_problem(r, 429)
    assert "retry-after" in r.headers
    assert_outer_layers(r, "429")
    # 503 (open breaker): two failures of one template open it
    for i in range(2):
        assert client.get(f"/fail/{i}", headers=h).status_code == 502
    before = calls(client, "fail")
    r = client.get("/fail/7", headers=h)
    assert_problem(r, 503)
    assert "retry-after" in r.headers
    assert_outer_layers(r, "503")
    assert calls(client, "fail") == before  # answered without Python
    # a preflight (answered by CORS itself) still has the request id
    r = client.options("/anything", headers={**h, "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 204 and r.headers["x-request-id"]
    # a cache hit
    client.get("/hello", headers=h)
    r = client.get("/hello", headers={**h, "X-Request-ID": "rid-hit"})
    assert r.headers["x-cache"] == "HIT"
    assert_outer_layers(r, "HIT")
    assert r.headers["x-request-id"] == "rid-hit"  # the hit's own id, not the stored one


def test_python_middleware_is_innermost_and_only_on_python_routes(client):
    for path in ("/missing", "/assets/app.js"):
        client.get(path)
    client.delete("/hello")
    client.options("/hello", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    # 413 before the handler, on a connection of its own: after an early answer to an unread
    # body the server may close the connection (seen once on a loaded CI box; see the note).
    httpx.post(client.base_url.join("/upload"), content=b"x" * 2048, timeout=20)
    assert calls(client, "mw:/missing") == 0
    assert calls(client, "mw:/assets/app.js") == 0
    assert calls(client, "mw:/upload") == 0
    # a Python route: the middleware runs once per handler call, and a cache hit skips both
    first = client.get("/big")
    assert first.headers["x-py-mw"] == "1"
    n_mw, n_big = calls(client, "mw:/big"), calls(client, "big")
    for _ in range(3):
        assert client.get("/big").headers["x-cache"] == "HIT"
    assert (calls(client, "mw:/big"), calls(client, "big")) == (n_mw, n_big)


def test_cache_hits_are_compressed_per_request(server, client):
    client.get("/big")
    r, body = raw(server, "/big", **{"Accept-Encoding": "gzip"})
    assert r.headers["x-cache"] == "HIT"
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).decode() == "cello edge " * 500
    r, body = raw(server, "/big", **{"Accept-Encoding": "identity"})
    assert r.headers["x-cache"] == "HIT" and "content-encoding" not in r.headers
    assert body.decode() == "cello edge " * 500


def test_304_keeps_the_weak_etag_and_vary_of_the_compressed_200(server):
    for path in ("/big", "/assets/app.js"):
        r, _ = raw(server, path, **{"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip", path
        tag = r.headers["etag"]
        assert tag.startswith('W/"'), (path, tag)
        r2, body = raw(server, path, **{"Accept-Encoding": "gzip", "If-None-Match": tag})
        assert r2.status_code == 304 and body == b"", path
        assert r2.headers["etag"] == tag, path
        assert "Accept-Encoding" in r2.headers["vary"], path
        # without compression the 200 and its 304 keep the strong tag
        r, _ = raw(server, path, **{"Accept-Encoding": "identity"})
        strong = r.headers["etag"]
        assert strong.startswith('"'), (path, strong)
        r2, _ = raw(server, path, **{"Accept-Encoding": "identity", "If-None-Match": strong})
        assert r2.status_code == 304 and r2.headers["etag"] == strong, path


def test_compression_skips_archives_and_304(server):
    r, body = raw(server, "/archive", **{"Accept-Encoding": "gzip, br"})
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert body.startswith(b"PK")


def test_security_headers_defaults_coep_corp_and_csp_order(client):
    r = client.get("/hello")
    assert "strict-transport-security" not in r.headers  # only with hsts_max_age
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    assert r.headers["cross-origin-resource-policy"] == "same-origin"
    csp = r.headers["content-security-policy"]
    assert re.fullmatch(r"default-src 'none'; script-src 'self' 'nonce-[A-Za-z0-9+/]{22}'; img-src 'self'", csp), csp


def test_a_handler_can_override_the_csp(client):
    r = client.get("/own-csp")
    assert r.headers["content-security-policy"] == "default-src 'self'"
    assert r.headers["x-frame-options"] == "DENY"  # the others still apply


def test_a_page_with_the_csp_nonce_is_never_served_from_the_cache(client):
    before = calls(client, "page")
    for _ in range(3):
        r = client.get("/page")
        assert r.headers.get("x-cache") != "HIT"
        nonce = re.search(r"'nonce-([^']+)'", r.headers["content-security-policy"]).group(1)
        assert f"nonce='{nonce}'" in r.text  # the page and its header agree
    assert calls(client, "page") == before + 3


def test_handler_timeouts_count_as_breaker_failures(client):
    for _ in range(2):
        r = client.get("/slow")
        assert_problem(r, 504)
    before = calls(client, "slow")
    r = client.get("/slow")
    assert_problem(r, 503)
    assert calls(client, "slow") == before


def test_request_id_length_bound(client):
    ok = "a" * 128
    assert client.get("/hello", headers={"X-Request-ID": ok}).headers["x-request-id"] == ok
    long = "a" * 129
    rid = client.get("/hello", headers={"X-Request-ID": long}).headers["x-request-id"]
    assert rid != long and re.fullmatch(r"[0-9a-f-]{36}", rid)
    for weird in (b"ok\xc3\xa9", b"a<script>", b"semi;colon", b"tab\tinside"):
        rid = client.get("/hello", headers={"X-Request-ID": weird}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f-]{36}", rid), weird


def test_access_log_template_has_the_id_for_rejections_and_hits(server, client):
    client.get("/hello")
    client.get("/hello", headers={"X-Request-ID": "rid-logged-hit"})
    client.get("/nowhere", headers={"X-Request-ID": "rid-logged-404"})
    client.get("/calls", headers={"X-Request-ID": "rid-excluded"})

    def lines():
        log = server.log()
        return "rid=rid-logged-hit" in log and "rid=rid-logged-404" in log and log

    log = wait_until(lines, timeout=10)
    assert "edge GET /hello 200 rid=rid-logged-hit" in log
    assert "edge GET /nowhere 404 rid=rid-logged-404" in log
    assert "rid-excluded" not in log


def test_request_id_is_a_span_attribute(serve):
    from otlp_receiver import GrpcReceiver

    receiver = GrpcReceiver()
    try:
        env = {"OBS_OTLP_ENDPOINT": receiver.endpoint, "OBS_REQUEST_ID": "1", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        server = serve("obs_app", env=env, fresh=True)
        r = httpx.get(server.url("/users/5"), headers={"X-Request-ID": "rid-span-1"}, timeout=10)
        assert r.status_code == 200 and r.headers["x-request-id"] == "rid-span-1"
        span = receiver.wait_for(lambda s: s["attributes"].get("http.request.id") == "rid-span-1")[0]
        assert span["name"] == "GET /users/{id:int}"
        server.stop()
    finally:
        receiver.stop()


def test_star_with_credentials_stops_the_server_at_start(tmp_path):
    import subprocess
    import sys

    from conftest import free_port

    app = tmp_path / "star_app.py"
    app.write_text(
        "from cello import App\n"
        "app = App()\n"
        "app.enable_cors(origins=['*'], credentials=True)\n"
        "@app.get('/')\n"
        "def index(request):\n"
        "    return {}\n"
        "if __name__ == '__main__':\n"
        f"    app.run(port={free_port()})\n"
    )
    proc = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "credentials=True is refused" in proc.stderr + proc.stdout
