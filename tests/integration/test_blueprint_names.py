"""Issue 8 item 8: the published Blueprint names, `register(child)` and `get_all_routes()`."""

import httpx
import pytest
from cello import Blueprint
from cello.testing import TestClient


def test_get_all_routes_lists_nested_routes_with_full_paths(load_app):
    m = load_app("blueprint_app")
    assert m.api.get_all_routes() == [
        ("GET", "/api/status", m.status),
        ("GET", "/api/v1/items", m.items),
        ("POST", "/api/v1/items", m.items),
        ("GET", "/api/v1/users/{id:int}", m.user),
    ]
    assert [(method, path) for method, path, _ in m.v1.get_all_routes()] == [
        ("GET", "/v1/items"),
        ("POST", "/v1/items"),
        ("GET", "/v1/users/{id:int}"),
    ]
    assert Blueprint("/empty").get_all_routes() == []


def test_register_is_register_blueprint():
    bp = Blueprint("/a")
    with pytest.raises(ValueError, match="itself"):
        bp.register(bp)


def test_nested_by_register_serves_through_the_test_client(load_app):
    with TestClient(load_app("blueprint_app").app) as client:
        assert client.get("/api/status").json() == {"ok": True}
        assert client.post("/api/v1/items").json() == {"method": "POST"}
        assert client.get("/api/v1/users/7").json() == {"id": 7}
        assert client.get("/api/v1/users/x").status_code == 404


def test_nested_by_register_over_a_socket(serve):
    server = serve("blueprint_app")
    assert httpx.get(server.url("/api/v1/users/3")).json() == {"id": 3}
    assert httpx.post(server.url("/api/v1/items")).json() == {"method": "POST"}
    assert httpx.get(server.url("/api/status")).json() == {"ok": True}
