"""Issue 10 "Also": `cello-dataplane` applies the edge layers (CORS, compression, request id,
security headers) from `cello.yaml` in front of a plain Python `http.server` app."""

from __future__ import annotations

import gzip
import sys

import httpx
import pytest
from conftest import ROOT, free_port, wait_for_port
from test_sidecar import start_dataplane

pytestmark = pytest.mark.timeout(60)

CONFIG = """\
cors:
  origins: ["https://app.example.com"]
  maxAge: 120
compression:
  minSize: 10
  algorithms: [gzip]
requestId: {}
securityHeaders:
  xFrameOptions: SAMEORIGIN
"""


@pytest.fixture(scope="module")
def upstream():
    import subprocess

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/apps/plain_upstream.py"), str(port)])
    try:
        wait_for_port("127.0.0.1", port, 10, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory, upstream):
    proc, port = start_dataplane(tmp_path_factory.mktemp("dp-mw"), upstream, CONFIG)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def test_preflight_is_answered_by_the_dataplane(dataplane):
    before = httpx.get(f"{dataplane}/count").json()["seen"]
    r = httpx.options(
        f"{dataplane}/anything",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-max-age"] == "120"
    # The upstream never saw the preflight (http.server would have answered 501).
    assert httpx.get(f"{dataplane}/count").json()["seen"] == before + 1


def test_proxied_responses_are_compressed_and_carry_cors(dataplane):
    with httpx.Client() as c:
        req = c.build_request(
            "GET", f"{dataplane}/hello", headers={"Accept-Encoding": "gzip", "Origin": "https://app.example.com"}
        )
        r = c.send(req, stream=True)
        raw = b"".join(r.iter_raw())
        r.close()
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in r.headers["vary"]
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    doc = __import__("json").loads(gzip.decompress(raw))
    assert doc["path"] == "/hello"
    # The generated request id is forwarded upstream and echoed to the client.
    assert doc["headers"]["x-request-id"] == r.headers["x-request-id"]


MORE = """\
etag: {}
cache:
  ttl: 60
  excludePaths: ["/status"]
circuitBreaker:
  failureThreshold: 2
  resetTimeout: 60
prometheus:
  enabled: true
"""


@pytest.fixture(scope="module")
def dataplane_more(tmp_path_factory, upstream):
    proc, port = start_dataplane(tmp_path_factory.mktemp("dp-mw-more"), upstream, CONFIG + MORE)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def test_the_dataplane_caches_and_tags_upstream_answers(dataplane_more):
    with httpx.Client(base_url=dataplane_more, timeout=10) as c:
        first = c.get("/cached-page")
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        again = c.get("/cached-page")
        assert again.headers["x-cache"] == "HIT"
        assert again.json()["seen"] == first.json()["seen"]  # the upstream was not asked again
        tag = again.headers["etag"]
        r = c.get("/cached-page", headers={"If-None-Match": tag})
        assert r.status_code == 304 and r.content == b""


def test_the_dataplane_breaker_opens_on_upstream_failures(dataplane_more):
    with httpx.Client(base_url=dataplane_more, timeout=10) as c:
        for _ in range(2):
            assert c.get("/status/502").status_code == 502
        r = c.get("/status/502")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert "retry-after" in r.headers
        assert "circuit_breaker_state" in c.get("/metrics").text
