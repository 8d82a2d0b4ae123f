"""Issue 2, item 5: client_ip() trusts forwarded headers only from configured trusted proxies
(app.set_trusted_proxies) and otherwise returns the socket peer."""

import httpx
import pytest

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def trusted(serve):
    """The test client (127.0.0.1) is a trusted proxy."""
    return serve("request_app", env={"CELLO_TEST_TRUSTED_PROXIES": "127.0.0.1"})


@pytest.fixture(scope="module")
def trusted_cidr(serve):
    """Trusts 127.0.0.0/8 as a CIDR range."""
    return serve("request_app", env={"CELLO_TEST_TRUSTED_PROXIES": "127.0.0.0/8"})


@pytest.fixture(scope="module")
def other_proxy(serve):
    """Only 10.0.0.0/8 is trusted: the test client is not a trusted proxy."""
    return serve("request_app", env={"CELLO_TEST_TRUSTED_PROXIES": "10.0.0.0/8"})


@pytest.fixture(scope="module")
def untrusted(serve):
    return serve("request_app")


def client_ip(server, headers=None) -> str:
    resp = httpx.get(server.url("/inspect/x"), headers=headers or {}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["client_ip"]


def test_no_forwarded_header_gives_peer(trusted, untrusted):
    assert client_ip(trusted) == "127.0.0.1"
    assert client_ip(untrusted) == "127.0.0.1"


def test_trusted_proxy_x_forwarded_for(trusted):
    assert client_ip(trusted, {"X-Forwarded-For": "203.0.113.7"}) == "203.0.113.7"


def test_trusted_proxy_cidr(trusted_cidr):
    assert client_ip(trusted_cidr, {"X-Forwarded-For": "203.0.113.7"}) == "203.0.113.7"


def test_trusted_proxy_chain_uses_rightmost_untrusted_hop(trusted):
    # The client claims 198.51.100.1; the (trusted) proxy appended the address it saw, 203.0.113.7.
    assert client_ip(trusted, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}) == "203.0.113.7"


def test_trusted_chain_skips_trusted_hops(trusted_cidr):
    assert client_ip(trusted_cidr, {"X-Forwarded-For": "203.0.113.7, 127.0.0.5"}) == "203.0.113.7"


def test_untrusted_peer_forwarded_for_is_ignored(untrusted):
    assert client_ip(untrusted, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"


def test_peer_outside_trusted_ranges_is_ignored(other_proxy):
    assert client_ip(other_proxy, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"
    assert client_ip(other_proxy, {"X-Real-IP": "203.0.113.8"}) == "127.0.0.1"
    assert client_ip(other_proxy, {"Forwarded": "for=203.0.113.9"}) == "127.0.0.1"


def test_garbage_forwarded_for_from_trusted_proxy_does_not_break(trusted):
    resp = httpx.get(trusted.url("/inspect/x"), headers={"X-Forwarded-For": "not-an-ip, ###"}, timeout=5)
    assert resp.status_code == 200
    assert isinstance(resp.json()["client_ip"], str)


def test_request_client_is_always_the_socket_peer(trusted):
    resp = httpx.get(trusted.url("/inspect/x"), headers={"X-Forwarded-For": "203.0.113.7"}, timeout=5)
    assert "127.0.0.1" in resp.json()["client"]


def inspect(server, headers):
    resp = httpx.get(server.url("/inspect/x"), headers=headers, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_trusted_proxy_rfc7239_forwarded(trusted):
    assert client_ip(trusted, {"Forwarded": "for=203.0.113.9;proto=http"}) == "203.0.113.9"
    assert client_ip(trusted, {"Forwarded": 'for="[2001:db8::1]:4711"'}) == "2001:db8::1"


def test_trusted_proxy_forwarded_proto_makes_request_secure(trusted):
    seen = inspect(trusted, {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert seen["scheme"] == "https"
    assert seen["is_secure"] is True
    assert seen["url"].startswith("https://"), seen["url"]


def test_untrusted_forwarded_proto_is_ignored(other_proxy):
    seen = inspect(other_proxy, {"X-Forwarded-Proto": "https", "Forwarded": "proto=https"})
    assert seen["scheme"] == "http"
    assert seen["is_secure"] is False


def test_the_resolved_client_reaches_request_context(trusted, untrusted):
    """Issue 8: the trusted-proxy layer's answer travels in request extensions to `request.context`."""
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}
    doc = httpx.get(trusted.url("/context-facts/x"), headers=headers, timeout=5).json()
    assert doc == {"route": "/context-facts/{name}", "client_ip": "203.0.113.7", "scheme": "https"}
    doc = httpx.get(untrusted.url("/context-facts/x"), headers=headers, timeout=5).json()
    assert doc == {"route": "/context-facts/{name}", "client_ip": "127.0.0.1", "scheme": "http"}
