"""Issue 2, item 7: sync and async handlers; a handler exception is a 500 problem+json with the
traceback in the body only in debug mode, always logged with its traceback, and the worker keeps
serving."""

import time

import httpx
import pytest
from rawhttp import assert_problem

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def debug_server(serve):
    return serve("errors_app", "--debug")


@pytest.fixture(scope="module")
def prod_server(serve):
    return serve("errors_app", "--env", "production")


@pytest.fixture(scope="module")
def dev_default_server(serve):
    """No flags: env defaults to development, so debug is on."""
    return serve("errors_app")


def wait_for_log(server, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("path", "func", "exc"),
    [("/boom", "boom_sync_handler", "ValueError"), ("/aboom", "boom_async_handler", "RuntimeError")],
)
def test_debug_500_has_traceback(debug_server, path, func, exc):
    resp = httpx.get(debug_server.url(path), timeout=5)
    assert_problem(resp, 500)
    assert func in resp.text, "debug 500 body does not show the traceback (handler frame missing)"
    assert exc in resp.text


def test_development_default_shows_traceback(dev_default_server):
    resp = httpx.get(dev_default_server.url("/boom"), timeout=5)
    assert_problem(resp, 500)
    assert "boom_sync_handler" in resp.text


@pytest.mark.parametrize(("path", "func"), [("/boom", "boom_sync_handler"), ("/aboom", "boom_async_handler")])
def test_production_500_hides_traceback(prod_server, path, func):
    resp = httpx.get(prod_server.url(path), timeout=5)
    assert_problem(resp, 500)
    for leak in ("Traceback", func, "errors_app.py", 'File "'):
        assert leak not in resp.text, f"production 500 body leaks {leak!r}: {resp.text[:500]}"


@pytest.mark.parametrize("server_name", ["debug_server", "prod_server"])
@pytest.mark.parametrize(("path", "detail"), [("/boom", "kaboom-sync-detail"), ("/aboom", "kaboom-async-detail")])
def test_exception_is_logged_with_traceback(request, server_name, path, detail):
    server = request.getfixturevalue(server_name)
    httpx.get(server.url(path), timeout=5)
    log = wait_for_log(server, detail)
    assert detail in log, f"exception not logged:\n{log[-2000:]}"
    assert "Traceback" in log, "exception logged without its traceback"


@pytest.mark.parametrize("server_name", ["debug_server", "prod_server"])
def test_worker_keeps_serving_after_exceptions(request, server_name):
    server = request.getfixturevalue(server_name)
    with httpx.Client(timeout=5) as client:
        for _ in range(20):
            assert client.get(server.url("/boom")).status_code == 500
            assert client.get(server.url("/aboom")).status_code == 500
            assert client.get(server.url("/ok")).json() == {"ok": True}
    assert server.alive()


def test_exception_keeps_the_connection_usable(prod_server):
    with prod_server.connect() as conn:
        assert conn.request("GET", "/boom").status == 500
        assert conn.request("GET", "/ok").status == 200


def test_exception_mid_stream_does_not_kill_the_server(prod_server):
    try:
        with httpx.Client(timeout=5) as client:
            resp = client.get(prod_server.url("/gen-boom"))
            assert resp.status_code in (200, 500)
    except httpx.HTTPError:
        pass  # the stream may be cut off: acceptable; what matters is the server afterwards
    assert httpx.get(prod_server.url("/ok"), timeout=5).json() == {"ok": True}


def test_bad_json_in_production_is_400_not_500(prod_server):
    resp = httpx.post(
        prod_server.url("/json"), content=b"{nope", headers={"Content-Type": "application/json"}, timeout=5
    )
    assert_problem(resp, 400)
