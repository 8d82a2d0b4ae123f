"""Issue 10 item 9 over a real socket, on an app without Python middleware
(tests/apps/exc_app.py): `@app.exception_handler` (sync and async, nearest class in the MRO),
`HTTPException(status, detail, headers=None)` with its headers, `ProblemDetails` returned and
raised; all problem+json unless the handler answers itself, and all pass back out through the
Rust layers (CORS)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def client(serve):
    server = serve("exc_app")
    with httpx.Client(base_url=server.base_url, timeout=10, headers={"Origin": ORIGIN}) as c:
        yield c


def test_exact_class_handler_returns_problem_details(client):
    r = client.get("/base")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "https://errors.example/app", "title": "App error", "status": 409, "detail": "base"}
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_nearest_class_in_the_mro_wins(client):
    r = client.get("/sub")
    assert (r.status_code, r.json(), r.headers["x-mapped"]) == (404, {"missing": "sub"}, "NotFoundError")
    assert r.headers["content-type"] == "application/json"
    r = client.get("/subsub")
    assert (r.status_code, r.json(), r.headers["x-mapped"]) == (404, {"missing": "gone"}, "GoneError")


def test_async_exception_handler_with_a_tuple(client):
    r = client.get("/later")
    assert (r.status_code, r.json(), r.headers["retry-after"]) == (503, {"later": "soon"}, "7")
    assert r.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.parametrize(
    ("path", "status", "detail", "headers"),
    [
        ("/http", 429, "slow down", {"retry-after": "3", "x-why": "quota"}),
        ("/http-async", 401, "who are you", {"www-authenticate": "Bearer"}),
    ],
)
def test_http_exception_is_problem_json_with_its_headers(client, path, status, detail, headers):
    r = client.get(path)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["status"], body["detail"]) == (status, detail)
    for k, v in headers.items():
        assert r.headers[k] == v
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_problem_details_returned_and_raised(client):
    r = client.get("/problem-value")
    assert r.status_code == 402 and r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "type": "about:blank",
        "title": "Out of credit",
        "status": 402,
        "detail": "balance 0",
        "balance": 0,
    }
    r = client.get("/problem-raised")
    assert r.status_code == 410 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://errors.example/gone" and r.json()["detail"] == "moved away"


def test_the_worker_keeps_serving(client):
    for _ in range(5):
        client.get("/base")
        client.get("/later")
    assert client.get("/ok").json() == {"ok": True}
