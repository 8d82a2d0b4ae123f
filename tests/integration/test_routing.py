"""Issue 2, item 3: routing, typed constraints, nested blueprints, HEAD, OPTIONS, 405, 404, and
RFC 7807 problem+json for every framework error."""

import threading
import time
import uuid

import httpx
import pytest
from rawhttp import assert_problem

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def server(serve):
    return serve("routing_app")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        yield c


def allow_set(resp) -> set[str]:
    value = resp.headers.get("allow")
    assert value is not None, f"no Allow header on {resp.status_code} for {resp.request.method} {resp.request.url}"
    return {m.strip().upper() for m in value.split(",") if m.strip()}


# --- methods ---------------------------------------------------------------------------------


def test_get(client):
    resp = client.get("/items")
    assert resp.status_code == 200
    assert resp.json() == {"method": "GET", "items": [1, 2, 3]}
    assert resp.headers["content-type"].startswith("application/json")


def test_post(client):
    resp = client.post("/items", json={})
    assert resp.status_code == 201
    assert resp.json() == {"method": "POST"}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_put_patch_delete(client, method):
    resp = client.request(method, "/items/17")
    assert resp.status_code == 200
    assert resp.json() == {"method": method, "id": "17"}


def test_explicit_head_route(client):
    resp = client.head("/probe")
    assert resp.status_code == 200
    assert resp.headers["x-probe"] == "head"
    assert resp.content == b""


def test_explicit_options_route(client):
    resp = client.options("/probe")
    assert resp.status_code == 204
    assert resp.headers["x-probe"] == "options"


def test_route_with_several_methods(client):
    assert client.get("/multi").json() == {"method": "GET"}
    assert client.post("/multi").json() == {"method": "POST"}
    assert_problem(client.put("/multi"), 405)


def test_route_defaults_to_get(client):
    assert client.get("/default-get").json() == {"method": "GET"}
    assert_problem(client.post("/default-get"), 405)


# --- params and constraints ------------------------------------------------------------------


def test_path_param(client):
    assert client.get("/users/alice").json() == {"name": "alice"}


def test_path_param_is_percent_decoded(client):
    assert client.get("/users/J%C3%B6rg%20K").json() == {"name": "Jörg K"}


def test_several_path_params(client):
    assert client.get("/users/bob/posts/42").json() == {"name": "bob", "post_id": "42"}


def test_param_does_not_match_across_segments(client):
    assert_problem(client.get("/users/a/b"), 404)


def test_int_constraint_matches_digits(client):
    assert client.get("/num/12345").json() == {"id": 12345}


@pytest.mark.parametrize("value", ["abc", "12a", "1.5", "%20"])
def test_int_constraint_failure_is_404(client, value):
    assert_problem(client.get(f"/num/{value}"), 404)


def test_uuid_constraint_matches_uuid(client):
    value = str(uuid.uuid4())
    assert client.get(f"/uuid/{value}").json() == {"id": value}


@pytest.mark.parametrize("value", ["not-a-uuid", "12345678-1234-5678-1234-56781234567", "42"])
def test_uuid_constraint_failure_is_404(client, value):
    assert_problem(client.get(f"/uuid/{value}"), 404)


def test_regex_constraint_matches(client):
    assert client.get("/slug/hello-world").json() == {"slug": "hello-world"}


@pytest.mark.parametrize("value", ["Hello", "hello_world", "abc1", "UPPER"])
def test_regex_constraint_failure_is_404(client, value):
    assert_problem(client.get(f"/slug/{value}"), 404)


# --- blueprints ------------------------------------------------------------------------------


def test_blueprint_prefix(client):
    assert client.get("/api/health").json() == {"blueprint": "api"}


def test_nested_blueprint_prefixes_compose(client):
    assert client.get("/api/v1/status").json() == {"blueprint": "v1"}
    resp = client.post("/api/v1/things/5")
    assert resp.status_code == 201
    assert resp.json() == {"blueprint": "v1", "id": 5}


@pytest.mark.parametrize("path", ["/v1/status", "/api/status", "/health", "/status"])
def test_nested_blueprint_routes_only_under_full_prefix(client, path):
    assert_problem(client.get(path), 404)


def test_nested_blueprint_typed_constraint_and_405(client):
    assert_problem(client.post("/api/v1/things/x"), 404)
    resp = client.get("/api/v1/things/5")
    assert_problem(resp, 405)
    assert "POST" in allow_set(resp)


# --- HEAD ------------------------------------------------------------------------------------


def test_get_route_answers_head_without_body(client):
    get = client.get("/users/alice")  # the body does not depend on the method
    head = client.head("/users/alice")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if "content-length" in head.headers:
        assert head.headers["content-length"] == str(len(get.content))


def test_head_sends_no_body_bytes_on_the_wire(server):
    """Pipelined HEAD then GET: any stray body bytes after the HEAD would corrupt the GET response."""
    from rawhttp import build_request

    with server.connect() as conn:
        conn.send(build_request("HEAD", "/big") + build_request("GET", "/ping"))
        head = conn.read_response("HEAD")
        after = conn.read_response()
    assert head.status == 200
    assert head.header("content-length") in (None, "100000")
    assert after.status == 200 and after.json() == {"pong": True}


def test_head_on_unknown_path_is_404_without_body(client):
    resp = client.head("/nope")
    assert resp.status_code == 404
    assert resp.content == b""


# --- OPTIONS, 405, 404 -----------------------------------------------------------------------


def test_options_lists_allowed_methods(client):
    resp = client.options("/items")
    assert resp.status_code in (200, 204)
    allowed = allow_set(resp)
    assert {"GET", "HEAD", "POST", "OPTIONS"} <= allowed
    assert not allowed & {"PUT", "PATCH", "DELETE"}


def test_options_on_param_route(client):
    allowed = allow_set(client.options("/items/3"))
    assert {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"} <= allowed
    assert "POST" not in allowed


def test_wrong_method_is_405_with_allow(client):
    resp = client.delete("/items")
    assert_problem(resp, 405)
    allowed = allow_set(resp)
    assert {"GET", "HEAD", "POST"} <= allowed
    assert "DELETE" not in allowed


def test_405_on_head_only_route(client):
    resp = client.get("/probe")
    assert_problem(resp, 405)
    assert {"HEAD", "OPTIONS"} <= allow_set(resp)


def test_unknown_path_is_404_problem(client):
    problem = assert_problem(client.get("/definitely/not/here"), 404)
    assert problem["status"] == 404


def test_unknown_path_with_other_methods_is_404(client):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert_problem(client.request(method, "/definitely/not/here"), 404)


def test_query_string_does_not_affect_routing(client):
    assert client.get("/items?x=1&y=2").json()["method"] == "GET"


# --- routing misses never wait for Python ------------------------------------------------------


def test_404_and_405_answered_while_a_handler_holds_the_gil(server):
    """Issue 2 item 3: routing, 404 and 405 never take the GIL. While a handler holds the GIL for
    seconds (one long regex match), misses must still be answered at once."""
    holder = threading.Thread(target=lambda: httpx.get(server.url("/hold-gil"), timeout=30))
    holder.start()
    try:
        time.sleep(0.4)  # let the handler reach its long GIL-holding call
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            for method, path, status in [("GET", "/nowhere", 404), ("POST", "/ping", 405), ("GET", "/num/x", 404)]:
                start = time.monotonic()
                resp = c.request(method, path)
                took = time.monotonic() - start
                assert resp.status_code == status
                assert took < 0.5, f"{method} {path} -> {status} took {took:.2f} s while Python was busy"
    finally:
        holder.join(timeout=30)


# --- more routing edge cases -------------------------------------------------------------------


def test_static_segment_wins_over_param(client):
    assert client.get("/users/me").json() == {"me": True}
    assert client.get("/users/mee").json() == {"name": "mee"}


def test_uuid_constraint_accepts_uppercase(client):
    value = str(uuid.uuid4()).upper()
    resp = client.get(f"/uuid/{value}")
    assert resp.status_code == 200
    assert resp.json()["id"].lower() == value.lower()


def test_unanchored_regex_constraint(client):
    """API.md's example anchors its regex (^...$), so whether an unanchored one must match the whole
    segment is left open; only what holds either way is checked."""
    assert client.get("/code/123").json() == {"code": "123"}
    assert_problem(client.get("/code/12"), 404)
    assert_problem(client.get("/code/abc"), 404)


def test_head_on_post_only_route_is_405(client):
    resp = client.head("/api/v1/things/5")
    assert resp.status_code == 405
    assert resp.content == b""
    assert "POST" in allow_set(resp)


def test_options_on_unknown_path_is_404(client):
    assert_problem(client.options("/definitely/not/here"), 404)


@pytest.mark.parametrize("method", ["PROPFIND", "TRACE", "PURGE"])
def test_unknown_or_unrouted_method_on_known_path(client, method):
    resp = client.request(method, "/items")
    assert resp.status_code in (405, 501), resp.status_code
    assert_problem(resp, resp.status_code)
    if resp.status_code == 405:
        assert {"GET", "POST"} <= allow_set(resp)
