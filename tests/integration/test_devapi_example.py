"""examples/devapi, started as a real server: the whole developer API together, its OpenAPI
document validated, and schemathesis run against it."""

from __future__ import annotations

import time

import httpx
import pytest
from openapi_spec_validator import validate
from test_openapi import schemathesis_run

AUTH = {"X-API-Key": "secret"}


@pytest.fixture(scope="module")
def server(serve):
    return serve("devapi_example")


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def test_list_with_pagination_and_filters(http):
    page = http.get("/api/v1/books", params={"limit": 1}).json()
    assert page["total"] >= 2 and len(page["items"]) == 1
    assert page["next"] == "/api/v1/books?limit=1&offset=1"
    assert http.get(page["next"]).json()["items"][0]["title"] == "Emma"
    assert http.get("/api/v1/books", params={"author": "Jane Austen"}).json()["total"] == 1
    errors = http.get("/api/v1/books", params={"limit": 0}).json()["errors"]
    assert errors[0]["loc"] == ["query", "limit"]


def test_create_needs_the_key_and_runs_a_background_task(http):
    book = {"title": "Ulysses", "author": "James Joyce", "price": 12.5}
    r = http.post("/api/v1/books", json=book)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "ApiKey"
    r = http.post("/api/v1/books", json=book, headers=AUTH)
    assert r.status_code == 201
    created = r.json()
    assert created == {"id": created["id"], **book, "tags": []}
    deadline = time.monotonic() + 5
    while f"created {created['id']}" not in http.get("/api/v1/audit", headers=AUTH).json():
        assert time.monotonic() < deadline, "the audit task did not run"
        time.sleep(0.02)
    assert http.get(f"/api/v1/books/{created['id']}").json()["title"] == "Ulysses"
    assert http.delete(f"/api/v1/books/{created['id']}", headers=AUTH).status_code == 204
    assert http.get(f"/api/v1/books/{created['id']}").status_code == 404


def test_html_ui_from_templates(http):
    r = http.get("/ui")
    assert r.headers["content-type"].startswith("text/html")
    assert '<a href="/api/v1/books/1">Dune</a> by Frank Herbert, 9.50 €' in r.text


def test_docs_and_spec(http):
    spec = http.get("/openapi.json").json()
    validate(spec)
    assert spec["info"]["title"] == "Bookshop"
    assert {"/api/v1/books", "/api/v1/books/{book_id}", "/api/v1/audit", "/ui"} <= set(spec["paths"])
    assert "x-api-key" in {p["name"] for p in spec["paths"]["/api/v1/books"]["post"]["parameters"]}
    assert http.get("/docs").status_code == 200 and http.get("/redoc").status_code == 200


@pytest.mark.parametrize("auth", [False, True], ids=["anonymous", "with-key"])
def test_schemathesis(server, auth):
    extra = ["-H", "X-API-Key: secret"] if auth else []
    out = schemathesis_run(server.url("/openapi.json"), *extra)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
