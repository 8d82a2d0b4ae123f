"""Issue 11, items 6 and 8: rate limiting in the Rust stack (429 problem+json with
Retry-After and RateLimit-* headers), per-route limits, keys behind trusted proxies, the
adaptive limit, and the Redis backend shared by two workers."""

import time

import httpx
import pytest
from auth_helpers import redis_or_skip

pytestmark = pytest.mark.timeout(90)


def get(server, path, headers=None):
    # A new connection per request: with several workers, SO_REUSEPORT spreads them.
    with httpx.Client(timeout=5) as c:
        return c.get(server.url(path), headers=headers or {})


def assert_429(resp):
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) >= 1
    assert resp.headers["ratelimit-remaining"] == "0"
    assert resp.json()["status"] == 429


def test_token_bucket_allows_capacity_then_429(serve):
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "5,0.01"})
    codes = []
    for _ in range(5):
        r = get(server, "/me")
        codes.append(r.status_code)
        assert r.headers["ratelimit-limit"] == "5"
    assert codes == [200] * 5
    assert_429(get(server, "/me"))
    # probes are never limited
    assert get(server, "/health/live").status_code == 200


def test_per_route_sliding_window(serve):
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "100,10"})
    assert [get(server, "/limited").status_code for _ in range(2)] == [200, 200]
    resp = get(server, "/limited")
    assert_429(resp)
    assert resp.headers["ratelimit-limit"] == "2"
    # the app-wide limit still has room for other routes
    assert get(server, "/me").status_code == 200


def test_key_by_header(serve):
    env = {"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "2,0.01", "CELLO_TEST_RATE_KEY": "header:X-Client"}
    server = serve("auth_app", env=env)
    for client in ("a", "b"):
        assert [get(server, "/me", {"X-Client": client}).status_code for _ in range(2)] == [200, 200]
        assert_429(get(server, "/me", {"X-Client": client}))


def test_forwarded_client_ip_from_trusted_proxy_is_the_key(serve):
    env = {"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "2,0.01", "CELLO_TEST_TRUSTED_PROXIES": "127.0.0.1"}
    server = serve("auth_app", env=env)
    for ip in ("203.0.113.1", "203.0.113.2"):
        assert [get(server, "/me", {"X-Forwarded-For": ip}).status_code for _ in range(2)] == [200, 200]
        assert_429(get(server, "/me", {"X-Forwarded-For": ip}))


def test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing(serve):
    env = {"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "2,0.01", "CELLO_TEST_TRUSTED_PROXIES": "10.0.0.0/8"}
    server = serve("auth_app", env=env)
    assert get(server, "/me", {"X-Forwarded-For": "198.51.100.1"}).status_code == 200
    assert get(server, "/me", {"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    assert_429(get(server, "/me", {"X-Forwarded-For": "198.51.100.3"}))
    assert_429(get(server, "/me", {"Forwarded": "for=198.51.100.4"}))


def test_adaptive_limit_shrinks_on_errors_and_recovers(serve):
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "rate_adaptive"})
    with httpx.Client(timeout=5) as c:
        assert c.get(server.url("/me")).headers["ratelimit-limit"] == "40"
        deadline = time.monotonic() + 20
        limit = 40
        while time.monotonic() < deadline and limit >= 40:
            r = c.get(server.url("/fail"))
            limit = int(r.headers["ratelimit-limit"])
        assert limit < 40, "the limit never shrank under a 100% error rate"
        while time.monotonic() < deadline and limit < 40:
            r = c.get(server.url("/me"))
            if r.status_code == 200:
                limit = int(r.headers["ratelimit-limit"])
        assert limit == 40, "the limit never recovered"


def test_redis_backend_holds_across_two_workers(serve):
    client = redis_or_skip()
    for key in client.scan_iter("cello:rl:*"):
        client.delete(key)
    env = {"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "20,0.001", "CELLO_TEST_RATE_BACKEND": "redis"}
    server = serve("auth_app", "--workers", "2", env=env)
    pids, ok, deadline = set(), 0, time.monotonic() + 30
    codes = []
    while time.monotonic() < deadline and len(codes) < 60:
        r = get(server, "/pid")
        codes.append(r.status_code)
        if r.status_code == 200:
            ok += 1
            pids.add(r.json()["pid"])
    assert len(pids) == 2, f"both workers should have served: {pids}"
    # 20 tokens in total, not 20 per worker
    assert ok == 20, codes
    assert codes[-1] == 429
    assert any(k.startswith(b"cello:rl:") for k in client.scan_iter("cello:rl:*"))
