"""Security suite (issue 11): rate-limit evasion with forged forwarding headers. The peer
(127.0.0.1) is not a trusted proxy, so X-Forwarded-For / Forwarded / X-Real-IP are ignored
and every request counts against the socket address: 2 × 200, then 429."""

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def app(serve):
    env = {"CELLO_TEST_AUTH": "rate", "CELLO_TEST_RATE": "2,0.01", "CELLO_TEST_TRUSTED_PROXIES": "10.0.0.0/8"}
    return serve("auth_app", env=env)


def test_rotating_spoofed_headers_do_not_reset_the_limit(app):
    spoofs = [
        {"X-Forwarded-For": "198.51.100.1"},
        {"X-Forwarded-For": "198.51.100.2, 10.0.0.1"},
        {"Forwarded": "for=198.51.100.3"},
        {"X-Real-IP": "198.51.100.4"},
    ]
    codes = [httpx.get(app.url("/me"), headers=h, timeout=5).status_code for h in spoofs]
    assert codes == [200, 200, 429, 429]


def test_429_is_problem_json_with_retry_after(app):
    resp = httpx.get(app.url("/me"), headers={"X-Forwarded-For": "192.0.2.99"}, timeout=5)
    assert resp.status_code == 429
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) >= 1
