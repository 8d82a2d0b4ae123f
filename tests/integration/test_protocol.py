"""Issue 2, item 1: HTTP/1.1 keep-alive and pipelining; HTTP/2 cleartext (prior knowledge) on
the same port."""

import asyncio
import concurrent.futures
import time

import httpx
import pytest
from rawhttp import ConnectionClosed, build_request

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def server(serve):
    return serve("routing_app")


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with server.connect() as conn:
        for i in range(5):
            resp = conn.request("GET", f"/n/{i}")
            assert resp.status == 200
            assert resp.version == "HTTP/1.1"
            assert resp.json() == {"n": str(i)}
            assert (resp.header("connection") or "").lower() != "close"


def test_keep_alive_after_post_with_body(server):
    with server.connect() as conn:
        payload = b"x" * 5000
        resp = conn.request("POST", "/echo", body=payload)
        assert resp.status == 200
        assert resp.body == payload
        assert conn.request("GET", "/ping").json() == {"pong": True}


def test_keep_alive_after_error_with_unread_body(server):
    """A 405 for a request with a body must not desynchronise the connection."""
    with server.connect() as conn:
        resp = conn.request("DELETE", "/items", headers={"Content-Type": "text/plain"}, body=b"ignored body")
        assert resp.status == 405
        assert conn.request("GET", "/ping").json() == {"pong": True}


def test_pipelined_requests_answered_in_order(server):
    with server.connect() as conn:
        conn.send(b"".join(build_request("GET", f"/n/{i}") for i in (1, 2, 3)))
        bodies = [conn.read_response().json() for _ in range(3)]
    assert bodies == [{"n": "1"}, {"n": "2"}, {"n": "3"}]


def test_pipelined_mixed_methods_and_bodies(server):
    requests = (
        build_request("POST", "/echo", body=b"first-body")
        + build_request("HEAD", "/items")
        + build_request("GET", "/big")
        + build_request("POST", "/echo", body=b"last")
    )
    with server.connect() as conn:
        conn.send(requests)
        first = conn.read_response("POST")
        head = conn.read_response("HEAD")
        big = conn.read_response("GET")
        last = conn.read_response("POST")
    assert first.body == b"first-body"
    assert head.status == 200 and head.body == b""
    assert big.body == b"x" * 100_000
    assert last.body == b"last"


def test_connection_close_is_honoured(server):
    with server.connect() as conn:
        resp = conn.request("GET", "/ping", headers={"Connection": "close"})
        assert resp.status == 200
        assert conn.wait_closed(timeout=3) is not None, "server kept the connection open after Connection: close"


def test_http10_request_is_answered_and_closed(server):
    with server.connect() as conn:
        conn.send(b"GET /ping HTTP/1.0\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 200
        assert resp.json() == {"pong": True}
        assert conn.wait_closed(timeout=3) is not None, "HTTP/1.0 request without keep-alive left the connection open"


def test_http11_requires_nothing_more_than_host(server):
    with server.connect() as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.read_response().status == 200


def test_h2c_prior_knowledge_on_same_port(server):
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        resp = client.get(server.url("/items"))
        assert resp.http_version == "HTTP/2"
        assert resp.status_code == 200
        assert resp.json() == {"method": "GET", "items": [1, 2, 3]}
        assert resp.headers["content-type"].startswith("application/json")


def test_h2c_post_body_and_params(server):
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        resp = client.post(server.url("/echo-json"), json={"a": [1, 2, {"b": None}]})
        assert resp.http_version == "HTTP/2"
        assert resp.json() == {"received": {"a": [1, 2, {"b": None}]}}
        resp = client.post(server.url("/api/v1/things/9"))
        assert resp.status_code == 201
        assert resp.json() == {"blueprint": "v1", "id": 9}


def test_h2c_errors_are_problem_json(server):
    from rawhttp import assert_problem

    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        assert_problem(client.get(server.url("/does-not-exist")), 404)
        resp = client.post(server.url("/ping"))
        assert_problem(resp, 405)
        assert "GET" in resp.headers["allow"]


def test_h2c_head_has_no_body(server):
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        resp = client.head(server.url("/items"))
        assert resp.http_version == "HTTP/2"
        assert resp.status_code == 200
        assert resp.content == b""


def test_h2c_concurrent_streams_on_one_connection(server):
    # One asyncio client: httpcore's *sync* HTTP/2 client shared by threads can put stream ids
    # on the wire out of order, which RFC 9113 §5.1.1 makes a connection error.
    async def run():
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            return await asyncio.gather(*[client.get(server.url(f"/n/{i}")) for i in range(40)])

    results = asyncio.run(run())
    assert [r.json() for r in results] == [{"n": str(i)} for i in range(40)]
    assert {r.http_version for r in results} == {"HTTP/2"}


def test_h2c_large_response_body(server):
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        resp = client.get(server.url("/big"))
        assert resp.content == b"x" * 100_000


def test_http1_still_works_after_h2(server):
    with httpx.Client(http2=True, timeout=5) as client:
        resp = client.get(server.url("/ping"))  # plain http:// with http1 enabled: HTTP/1.1
        assert resp.http_version == "HTTP/1.1"
        assert resp.json() == {"pong": True}


def test_closed_connection_raises_cleanly(server):
    """Sanity check of the raw client: a closed socket is reported, not hung on."""
    with server.connect() as conn:
        conn.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        conn.read_response()
        with pytest.raises((ConnectionClosed, ConnectionResetError)):
            conn.read_response()


def test_many_concurrent_connections_get_their_own_answers(server):
    def fetch(i):
        with server.connect(timeout=10) as conn:
            return conn.request("GET", f"/users/u{i}").json()

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(fetch, range(200)))
    assert results == [{"name": f"u{i}"} for i in range(200)]
    assert httpx.get(server.url("/ping"), timeout=5).json() == {"pong": True}


def test_pipelined_requests_behind_a_streaming_response(serve):
    server = serve("returns_app")
    with server.connect() as conn:
        conn.send(build_request("GET", "/gen-slow") + build_request("GET", "/int") + build_request("GET", "/str"))
        assert conn.read_response().body == b"first\nlast\n"
        assert conn.read_response().json() == 42
        assert conn.read_response().json() == 'hello "world"'


def test_http10_keep_alive_is_honoured(server):
    with server.connect() as conn:
        conn.send(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = conn.read_response()
        assert resp.status == 200
        assert (resp.header("connection") or "").lower() == "keep-alive"
        conn.send(b"GET /n/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert conn.read_response().json() == {"n": "2"}


@pytest.mark.timeout(30)
def test_default_idle_outlives_read_header(server):
    """Defaults: read_header=5, idle=60. A keep-alive connection idle for 6 s is still usable."""
    with server.connect(timeout=10) as conn:
        assert conn.request("GET", "/ping").status == 200
        time.sleep(6)
        assert conn.request("GET", "/ping").status == 200
