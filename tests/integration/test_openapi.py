"""OpenAPI 3.1 generated from the routes; Swagger UI and ReDoc served offline; `cello openapi`;
the spec validates and schemathesis finds no server error or schema violation on a live app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cello import App, Blueprint
from cello.testing import TestClient
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "python" / "cello" / "static"


@pytest.fixture(scope="module")
def server(serve):
    return serve("openapi_app")


@pytest.fixture(scope="module")
def spec(server):
    r = httpx.get(server.url("/openapi.json"), timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def op(spec, path, method):
    return spec["paths"][path][method]


def params(operation):
    return {(p["in"], p["name"]): p for p in operation.get("parameters", [])}


def test_spec_is_valid_openapi_31(spec):
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_info_and_servers(spec):
    assert spec["info"] == {"title": "Shop", "version": "2.1.0", "description": "A test shop"}
    assert spec["servers"] == [{"url": "http://localhost:8000"}]


def test_paths_blueprints_and_exclusions(spec):
    assert set(spec["paths"]) == {
        "/items/{item_id}",
        "/items",
        "/items/{item_id}/note",
        "/upload",
        "/things/{thing_id}",
        "/page",
        "/admin/items/{item_id}",  # from the blueprint
    }  # /hidden (include_in_schema=False), /openapi.json, /docs, /redoc and the assets are not in it


def test_parameters_with_schemas_and_constraints(spec):
    p = params(op(spec, "/items", "get"))
    assert p[("query", "limit")]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}
    assert p[("query", "limit")]["required"] is False
    assert p[("query", "ids")]["schema"]["type"] == "array"
    assert p[("query", "ids")]["schema"]["items"] == {"type": "integer"}
    q = p[("query", "q")]["schema"]["anyOf"][0]
    assert q["maxLength"] == 20 and q["pattern"] == "^[a-z]*$"
    color = p[("query", "color")]["schema"]["anyOf"][0]
    assert spec["components"]["schemas"][color["$ref"].rsplit("/", 1)[1]]["enum"] == ["red", "blue"]
    path = params(op(spec, "/items/{item_id}", "get"))
    assert path[("path", "item_id")] == {"name": "item_id", "in": "path", "required": True,
                                         "schema": {"type": "integer"}}  # fmt: skip
    assert params(op(spec, "/things/{thing_id}", "get"))[("path", "thing_id")]["schema"]["format"] == "uuid"


def test_header_from_a_dependency_and_cookie(spec):
    create = params(op(spec, "/items", "post"))
    assert create[("header", "x-api-key")]["required"] is True
    assert create[("header", "x-api-key")]["description"] == "the caller's key"
    note = params(op(spec, "/items/{item_id}/note", "put"))
    assert note[("cookie", "session")]["required"] is False


def test_request_bodies(spec):
    body = op(spec, "/items", "post")["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    item_in = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert item_in["properties"]["name"]["minLength"] == 1
    assert item_in["properties"]["price"]["exclusiveMinimum"] == 0
    assert "Tag" in spec["components"]["schemas"]  # nested models land in components
    embedded = op(spec, "/items/{item_id}/note", "put")["requestBody"]["content"]["application/json"]["schema"]
    assert embedded["properties"] == {"text": {"type": "string"}} and embedded["required"] == ["text"]
    upload = op(spec, "/upload", "post")["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["file"]["format"] == "binary"
    assert upload["required"] == ["file", "title"]


def test_responses(spec):
    get = op(spec, "/items/{item_id}", "get")["responses"]
    assert get["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ItemOut"}
    assert get["422"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }
    assert get["default"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/ProblemDetails"
    }
    assert "201" in op(spec, "/items", "post")["responses"]
    assert op(spec, "/items", "get")["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    deleted = op(spec, "/admin/items/{item_id}", "delete")["responses"]["204"]
    assert "content" not in deleted
    assert "text/html" in op(spec, "/page", "get")["responses"]["200"]["content"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["ProblemDetails"]["required"]) == {"type", "title", "status"}


def test_metadata(spec):
    get = op(spec, "/items/{item_id}", "get")
    assert get["summary"] == "Fetch one item."  # the docstring's first paragraph
    assert get["description"] == "Returns the item with that id."
    assert get["tags"] == ["items"]
    assert op(spec, "/items", "get")["summary"] == "List items"
    assert op(spec, "/items", "post")["description"] == "Create an item."
    assert op(spec, "/things/{thing_id}", "get")["deprecated"] is True
    ids = [o["operationId"] for methods in spec["paths"].values() for o in methods.values()]
    assert len(ids) == len(set(ids))
    assert {"name": "admin"} in spec["tags"] and {"name": "items"} in spec["tags"]


def test_swagger_ui_and_redoc_are_served_offline(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for page, asset_names in (
            ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
            ("/redoc", ["redoc.standalone.js"]),
        ):
            r = http.get(page)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            html = r.text
            assert "/openapi.json" in html
            assert "http://" not in html and "https://" not in html  # nothing from a CDN
            for name in asset_names:
                url = f"/docs/assets/{name}"
                assert url in html
                asset = http.get(url)
                assert asset.status_code == 200
                assert len(asset.content) > 100_000
        assert http.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/docs/assets/nope.js").status_code == 404


def test_vendored_assets_are_the_package_files():
    for rel in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "redoc/redoc.standalone.js"):
        assert (STATIC / rel).stat().st_size > 100_000
    assert "SwaggerUIBundle" in (STATIC / "swagger-ui/swagger-ui-bundle.js").read_text(errors="replace")[:500_000]


def test_cli_prints_the_spec(spec):
    out = subprocess.run(
        [sys.executable, "-m", "cello", "openapi", "tests/apps/openapi_app.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == spec


def test_openapi_without_enable_and_internal_routes():
    app = App()
    bp = Blueprint("/v1")

    @bp.get("/ping")
    def ping():
        return {"pong": True}

    app.register_blueprint(bp)
    doc = app.openapi()
    validate(doc)
    assert doc["info"] == {"title": "Cello API", "version": "0.1.0"}
    assert list(doc["paths"]) == ["/v1/ping"]
    assert "422" not in doc["paths"]["/v1/ping"]["get"]["responses"]  # no inputs, nothing to validate


def test_docs_urls_can_move_or_be_disabled():
    app = App()
    app.enable_openapi(openapi_url="/api/spec.json", docs_url="/api/docs", redoc_url=None)
    with TestClient(app) as client:
        assert client.get("/api/spec.json").json()["openapi"] == "3.1.0"
        assert "/api/spec.json" in client.get("/api/docs").text
        assert client.get("/redoc").status_code == 404
        assert client.get("/api/docs/assets/swagger-ui.css").status_code == 200


def schemathesis_run(url: str, *extra: str) -> subprocess.CompletedProcess:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("schemathesis is not installed (requirements-dev.txt)")
        pytest.skip("schemathesis is not installed")
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    return subprocess.run(
        [exe, "run", url, "--checks", checks, "-n", "25", "--seed", "7", "-w", "1",
         "--phases", "examples,coverage,fuzzing", "--generation-deterministic", *extra],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip


def test_schemathesis_finds_no_server_error_or_schema_violation(server):
    out = schemathesis_run(server.url("/openapi.json"))
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_security_schemes_follow_the_enabled_auth_layers(monkeypatch):
    app = App()

    @app.get("/x")
    def x():
        return {}

    base = app.server_config()
    assert "securitySchemes" not in app.openapi()["components"]
    auth = {"jwt": {"enabled": True}, "apiKey": {"enabled": True, "headerName": "X-Key"},
            "basicAuth": {"enabled": True}}  # fmt: skip
    monkeypatch.setattr(app, "server_config", lambda *a, **k: {**base, **auth})
    doc = app.openapi()
    validate(doc)
    assert doc["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Key"},
        "basicAuth": {"type": "http", "scheme": "basic"},
    }
    assert doc["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}, {"basicAuth": []}]
