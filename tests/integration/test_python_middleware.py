"""Issue 10 items 9 and 12 over a real socket: exception mapping and Python middleware
(tests/apps/pymw_app.py)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client(serve):
    server = serve("pymw_app")
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


# ---- Python middleware -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ctx", "/ctx-async"])
def test_middleware_runs_in_order_and_modifies_context_and_response(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.json() == {"seen_by": ["sync", "async"]}
    assert r.headers["x-sync-mw"] == "1"
    assert r.headers["x-async-mw"] == "200"


def test_sync_middleware_short_circuits(client):
    r = client.get("/ctx", headers={"x-block": "1"})
    assert r.status_code == 403
    assert r.json() == {"blocked": True}
    assert "x-async-mw" not in r.headers


def test_async_middleware_short_circuits_with_a_plain_value(client):
    r = client.get("/short-async")
    assert (r.status_code, r.json()) == (200, {"short": "async"})
    assert r.headers["x-sync-mw"] == "1"
    # Middleware runs only on Python routes: a routing miss is Rust's 404.
    r = client.get("/missing")
    assert r.status_code == 404
    assert "x-sync-mw" not in r.headers
    assert r.headers["content-type"] == "application/problem+json"


def test_call_next_gives_a_response_for_any_return_value(client):
    r = client.get("/plain")
    assert r.json() == "text"
    assert r.headers["x-async-mw"] == "200"


def test_middleware_gets_the_mapped_response_of_an_exception(client):
    # Like Starlette: call_next returns what the exception mapping answers.
    r = client.get("/http")
    assert r.status_code == 418
    assert r.headers["x-tea"] == "1"
    assert r.headers["x-sync-mw"] == "1"
    assert r.headers["x-async-mw"] == "418"
    r = client.get("/slow")  # an async exception handler, awaited inside call_next
    assert r.headers["x-async-mw"] == "503"


def test_rust_rejections_skip_python_middleware(client):
    r = client.options("/ctx", headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204
    assert "x-sync-mw" not in r.headers
    assert client.delete("/ctx").status_code == 405


# ---- exception mapping -------------------------------------------------------------------------


def test_handler_for_the_exact_class(client):
    r = client.get("/base")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "https://errors.example/app", "title": "App error", "status": 409, "detail": "base"}


def test_subclass_resolution_by_mro(client):
    r = client.get("/sub")
    assert (r.status_code, r.json()) == (404, {"missing": "sub"})
    assert r.headers["content-type"] == "application/json"
    r = client.get("/subsub")
    assert (r.status_code, r.json()) == (404, {"missing": "tea"})


def test_async_exception_handler(client):
    r = client.get("/slow")
    assert (r.status_code, r.json()) == (503, {"slow": "later"})


def test_http_exception_is_problem_json(client):
    r = client.get("/http")
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "short and stout"
    assert r.json()["status"] == 418


def test_problem_details_as_value_and_as_exception(client):
    r = client.get("/problem-value")
    assert r.status_code == 402
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "about:blank",
        "title": "Out of credit",
        "status": 402,
        "detail": "balance 0",
        "balance": 0,
    }
    r = client.get("/problem-raised")
    assert r.status_code == 410
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "moved away"


def test_http_exception_signature():
    from cello import HTTPException

    e = HTTPException(404, "gone", headers={"X-A": "1"})
    assert (e.status_code, e.status, e.detail, e.headers) == (404, 404, "gone", {"X-A": "1"})
    assert HTTPException(status=400).detail == "Bad Request"
