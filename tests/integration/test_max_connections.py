"""Issue 2, item 2: LimitsConfig.max_connections (maxconn_app: max_connections=5, one worker).

Beyond the limit a connection is either refused (503 problem+json, or closed) or not served until
another one closes; both are accepted. The first five are served and the server survives."""

import contextlib
import socket
import time

import httpx
import pytest
from rawhttp import ConnectionClosed, assert_problem, build_request

pytestmark = pytest.mark.timeout(30)

LIMIT = 5


@pytest.fixture(scope="module")
def server(serve):
    return serve("maxconn_app")


def over_limit_outcome(conn, wait: float = 1.5):
    """'served', 'refused' (503 or closed) or 'pending' (no answer within `wait`)."""
    conn.settimeout(wait)
    try:
        conn.send(build_request("GET", "/ping"))
        resp = conn.read_response()
    except (ConnectionClosed, ConnectionResetError, BrokenPipeError):
        return "refused", None
    except TimeoutError:
        return "pending", None
    if resp.status == 503:
        return "refused", resp
    return ("served" if resp.status == 200 else f"status {resp.status}"), resp


def test_first_connections_served_and_extra_one_refused_or_queued(server):
    with contextlib.ExitStack() as stack:
        held = []
        for i in range(LIMIT):
            conn = stack.enter_context(server.connect())
            resp = conn.request("GET", "/ping")
            assert resp.status == 200, f"connection {i + 1} of {LIMIT} was not served"
            held.append(conn)

        extra = stack.enter_context(server.connect())
        outcome, resp = over_limit_outcome(extra)
        assert outcome in ("refused", "pending"), f"connection {LIMIT + 1} was {outcome} while {LIMIT} were open"
        if resp is not None:
            assert_problem(resp, 503)

        # The held connections are still usable.
        for conn in held[1:]:
            assert conn.request("GET", "/ping").status == 200

        # Free one slot: a waiting connection is then served, or a new one is.
        held[0].close()
        if outcome == "pending":
            extra.settimeout(5)
            resp = extra.read_response()
            assert resp.status == 200
        else:
            deadline = time.monotonic() + 5
            while True:
                with server.connect() as fresh:
                    status, _ = over_limit_outcome(fresh, wait=2)
                if status == "served":
                    break
                assert time.monotonic() < deadline, "no new connection served after a slot was freed"
                time.sleep(0.1)


def test_server_survives_a_connection_flood(server):
    socks = []
    try:
        for _ in range(50):
            try:
                socks.append(socket.create_connection((server.host, server.port), timeout=2))
            except OSError:
                break
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            resp = httpx.get(server.url("/ping"), timeout=3)
            if resp.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server not serving 10 s after a connection flood"
        time.sleep(0.2)
    assert server.alive()
    # All five slots become available again (closed flood connections may take a moment to be reaped).
    deadline = time.monotonic() + 10
    while True:
        with contextlib.ExitStack() as stack:
            served = 0
            for _ in range(LIMIT):
                conn = stack.enter_context(server.connect())
                status, _ = over_limit_outcome(conn, wait=2)
                if status != "served":
                    break
                served += 1
        if served == LIMIT:
            break
        assert time.monotonic() < deadline, f"only {served} of {LIMIT} slots usable 10 s after the flood"
        time.sleep(0.3)


def test_max_requests_per_connection(server):
    """max_requests_per_connection=3: the third response ends the connection."""
    deadline = time.monotonic() + 10
    while True:  # slots held by earlier tests' connections may take a moment to free up
        conn = server.connect()
        resp = conn.request("GET", "/ping")
        if resp.status == 200:
            break
        conn.close()
        assert time.monotonic() < deadline, f"no free connection slot: {resp.status}"
        time.sleep(0.2)
    with conn:
        for i in range(1, 3):
            resp = conn.request("GET", "/ping")
            assert resp.status == 200, f"request {i + 1} not served"
        assert (resp.header("connection") or "").lower() == "close", "third response does not announce the close"
        assert conn.wait_closed(timeout=3) is not None, "connection still open after max_requests_per_connection"


def fresh_request(server, method, path, body=b""):
    """One request on a new connection, retrying while earlier tests' connections still hold slots."""
    deadline = time.monotonic() + 10
    while True:
        with server.connect() as conn:
            resp = conn.request(method, path, body=body)
        if resp.status != 503 or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def test_small_configured_body_limit(server):
    """max_body_size=1000 (not the default): 1000 bytes pass, 1001 are refused."""
    resp = fresh_request(server, "POST", "/upload", b"b" * 1000)
    assert resp.status == 200 and resp.json() == {"size": 1000}
    assert_problem(fresh_request(server, "POST", "/upload", b"b" * 1001), 413)
