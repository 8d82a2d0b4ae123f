"""Typed parameters and Depends, over a real socket (tests/apps/di_app.py) and with TestClient."""

from __future__ import annotations

import time
from typing import Annotated

import httpx
import pytest
from cello import App, Depends
from cello.testing import TestClient


@pytest.fixture(scope="module")
def server(serve):
    return serve("di_app")


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def errors(r):
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return {tuple(e["loc"]): e for e in r.json()["errors"]}


# ---- typed parameters ---------------------------------------------------------------------


def test_path_int_and_query_defaults(http):
    assert http.get("/items/5", params={"q": "a", "limit": 3}).json() == {"item_id": 5, "q": "a", "limit": 3}
    assert http.get("/items/7").json() == {"item_id": 7, "q": None, "limit": 10}


def test_path_conversion_failure_is_422_with_fastapi_shape(http):
    errs = errors(http.get("/items/abc"))
    e = errs[("path", "item_id")]
    assert e["type"] == "int_parsing"
    assert e["msg"] == "Input should be a valid integer, unable to parse string as an integer"
    assert e["input"] == "abc"


def test_float_uuid_enum_paths(http):
    assert http.get("/floats/1.5").json() == {"x": 1.5}
    u = "6f1c2b0e-8a4e-4c1a-9d2f-3b5e7a9c1d2e"
    assert http.get(f"/uuids/{u}").json() == {"u": u, "version": 4}
    assert errors(http.get("/uuids/nope"))[("path", "u")]["type"] == "uuid_parsing"
    assert http.get("/colors/green").json() == {"color": "green", "is_enum": True}
    assert errors(http.get("/colors/blue"))[("path", "color")]["type"] == "enum"


def test_query_list_from_repeated_keys_and_constraints(http):
    r = http.get("/search", params=[("ids", "1"), ("ids", "2"), ("limit", "5"), ("name", "abc"), ("p", "2")])
    assert r.json() == {"ids": [1, 2], "limit": 5, "name": "abc", "flag": False, "page": 2}
    assert http.get("/search", params={"flag": "true"}).json()["flag"] is True
    errs = errors(http.get("/search", params={"limit": "0", "name": "A", "p": "0"}))
    assert errs[("query", "limit")]["type"] == "greater_than_equal"
    assert errs[("query", "name")]["type"] == "string_too_short"
    assert errs[("query", "p")]["type"] == "greater_than"  # alias: the wire name is in loc
    assert errors(http.get("/search", params={"limit": "101"}))[("query", "limit")]["type"] == "less_than_equal"
    assert errors(http.get("/search", params={"name": "abcdef"}))[("query", "name")]["type"] == "string_too_long"
    assert errors(http.get("/search", params={"name": "ab1"}))[("query", "name")]["type"] == "string_pattern_mismatch"
    assert errors(http.get("/search", params=[("ids", "1"), ("ids", "x")]))[("query", "ids", 1)]["type"] == (
        "int_parsing"
    )


def test_missing_required_query(http):
    e = errors(http.get("/required"))[("query", "n")]
    assert e["type"] == "missing" and e["msg"] == "Field required"


def test_header_and_cookie_markers(http):
    r = http.get("/headers", headers={"X-User": "bob", "X-Count": "3", "Cookie": "session=s1"})
    assert r.json() == {"x_user": "bob", "x_count": 3, "session": "s1"}
    assert ("header", "x-user") in errors(http.get("/headers"))


def test_model_body_and_validation(http):
    r = http.post("/items", json={"name": "pen", "price": 2, "extra": 1})
    assert r.json() == {"name": "pen", "price": 2.0, "tags": []}
    errs = errors(http.post("/items", json={"name": "", "price": -1}))
    assert errs[("body", "name")]["type"] == "string_too_short"
    assert errs[("body", "price")]["type"] == "greater_than"
    assert errors(http.post("/items"))[("body",)]["type"] == "missing"


def test_bad_json_is_400(http):
    r = http.post("/items", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"


def test_dataclass_body(http):
    assert http.post("/points", json={"x": 1, "y": "2"}).json() == {"x": 1, "y": 2, "is_point": True}
    assert ("body", "y") in errors(http.post("/points", json={"x": 1, "y": "z"}))


def test_several_body_params_are_embedded(http):
    r = http.post("/embed", json={"item": {"name": "a", "price": 1}, "count": 3})
    assert r.json() == {"item": "a", "count": 3}
    assert ("body", "count") in errors(http.post("/embed", json={"item": {"name": "a", "price": 1}}))


def test_form_and_file_markers(http):
    assert http.post("/form", data={"name": "n", "age": "4"}).json() == {"name": "n", "age": 4}
    assert errors(http.post("/form", data={"name": "n", "age": "-1"}))[("form", "age")]["type"] == (
        "greater_than_equal"
    )
    r = http.post("/upload", files={"file": ("a.txt", b"hello")}, data={"note": "hi"})
    assert r.json() == {"filename": "a.txt", "size": 5, "note": "hi"}
    assert ("file", "file") in errors(http.post("/upload", data={"note": "x"}))


def test_path_marker_constraints(http):
    assert http.get("/paths/abc").json() == {"slug": "abc"}
    assert errors(http.get("/paths/ab"))[("path", "slug")]["type"] == "string_too_short"


def test_request_by_type_and_legacy_handlers(http):
    assert http.get("/by-type/zed").json() == {"path": "/by-type/zed", "name": "zed"}
    assert http.get("/legacy/7", params={"q": "1"}).json() == {"id": "7", "q": "1"}


# ---- Depends ------------------------------------------------------------------------------


def test_nested_dependencies_cached_per_request(http):
    r = http.get("/deps/user", headers={"x-token": "secret"})
    body = r.json()
    assert body["user"] == {"name": "alice", "token": "secret", "mode": "test"}
    first = body["settings_call"]
    # settings is used twice in the request but called once; the next request calls it again.
    assert http.get("/deps/user", headers={"x-token": "secret"}).json()["settings_call"] == first + 1


def test_dependency_exception_is_problem_json(http):
    r = http.get("/deps/user", headers={"x-token": "bad"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "bad token"
    assert ("header", "x-token") in errors(http.get("/deps/user"))


def test_singleton_by_name(http):
    assert http.get("/deps/singleton").json() == {"db": "primary"}


def test_generator_teardown_runs_after_response(http):
    http.delete("/events")
    assert http.get("/deps/gen").json() == {"s": "session"}
    deadline = time.monotonic() + 5
    while "session:close" not in http.get("/events").json() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get("/events").json() == ["session:open", "handler:gen", "session:close"]


def test_generator_teardown_runs_when_handler_raised(http):
    http.delete("/events")
    r = http.get("/deps/gen-fail")
    assert r.status_code == 500
    deadline = time.monotonic() + 5
    while "session:close" not in http.get("/events").json() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get("/events").json() == [
        "session:open",
        "handler:gen-fail",
        "session:error:RuntimeError",
        "session:close",
    ]


def test_async_generator_and_async_dependencies(http):
    http.delete("/events")
    assert http.get("/deps/async", params={"limit": 4}).json() == {"r": "aresource", "v": 8}
    # The async teardown sleeps 50 ms after the response; it still runs.
    deadline = time.monotonic() + 5
    while "aresource:close" not in http.get("/events").json() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.get("/events").json() == ["aresource:open", "aresource:close"]


def test_annotated_depends(http):
    assert http.get("/deps/annotated", params={"limit": 4}).json() == {"v": 8}


def test_depends_as_guard(http):
    assert http.get("/deps/guarded").status_code == 422
    assert http.get("/deps/guarded", headers={"x-token": "nope"}).status_code == 401
    assert http.get("/deps/guarded", headers={"x-token": "secret"}).json() == {"ok": True}
    r = http.get("/deps/denied")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"


# ---- dependency_overrides and the TestClient ---------------------------------------------


def test_dependency_overrides_in_testclient(load_app):
    mod = load_app("di_app")
    app = mod.app
    app.dependency_overrides[mod.token] = lambda: "overridden"
    app.dependency_overrides["db"] = type("Fake", (), {"name": "fake"})()
    try:
        with TestClient(app) as client:
            assert client.get("/deps/user").json()["user"]["token"] == "overridden"
            assert client.get("/deps/singleton").json() == {"db": "fake"}
    finally:
        app.dependency_overrides.clear()
    with TestClient(app) as client:
        assert client.get("/deps/singleton").json() == {"db": "primary"}


def test_override_with_async_generator():
    app = App()
    closed = []

    def real():
        raise AssertionError("the override must be used")

    async def fake():
        yield "fake"
        closed.append(True)

    @app.get("/")
    def h(v: str = Depends(real)):
        return {"v": v}

    app.dependency_overrides[real] = fake
    with TestClient(app) as client:
        assert client.get("/").json() == {"v": "fake"}
        assert closed == [True]  # teardown done when the call returns


def test_unknown_singleton_is_a_clear_500():
    app = App()

    @app.get("/")
    def h(db=Depends("nope")):
        return {}

    with TestClient(app) as client, pytest.raises(LookupError, match="no singleton registered"):
        client.get("/")


def test_path_marker_for_unknown_name_fails_at_startup():
    from cello import Path

    app = App()

    @app.get("/x")
    def h(y: int = Path()):
        return {}

    with pytest.raises(ValueError, match="not in the route path"):
        TestClient(app).get("/x")


def test_plain_request_handler_is_not_wrapped():
    """The benchmarked path: ``def h(request)`` is called directly, no wrapper."""
    app = App()

    @app.get("/")
    def h(request):
        return {}

    (endpoint,) = app._compile()[1]
    assert endpoint is h


class Settings:
    def __init__(self) -> None:
        self.mode = "typed"


def test_annotated_depends_without_argument_uses_the_type():
    app = App()

    @app.get("/")
    def h(s: Annotated[Settings, Depends()]):
        return {"mode": s.mode}

    with TestClient(app) as client:
        assert client.get("/").json() == {"mode": "typed"}


def test_use_cache_false_calls_again_and_teardowns_run_innermost_first():
    app = App()
    calls, events = [], []

    def counter():
        calls.append(1)
        return len(calls)

    def outer_res():
        events.append("outer:open")
        yield "o"
        events.append("outer:close")

    def inner_res(o: str = Depends(outer_res)):
        events.append("inner:open")
        yield o + "i"
        events.append("inner:close")

    @app.get("/")
    def h(a=Depends(counter), b=Depends(counter, use_cache=False), r: str = Depends(inner_res)):
        return {"a": a, "b": b, "r": r}

    with TestClient(app) as client:
        assert client.get("/").json() == {"a": 1, "b": 2, "r": "oi"}
    assert events == ["outer:open", "inner:open", "inner:close", "outer:close"]


def test_validation_errors_of_handler_and_dependencies_are_reported_together():
    from cello import Query

    app = App()

    def dep(page: int = Query(ge=1)):
        return page

    @app.get("/")
    def h(limit: int, p=Depends(dep)):
        return {}

    with TestClient(app) as client:
        r = client.get("/?page=0&limit=x")
        assert r.status_code == 422
        assert {tuple(e["loc"]) for e in r.json()["errors"]} == {("query", "page"), ("query", "limit")}
