"""Issue 2, item 9: cello.testing.TestClient(app) drives the real Rust pipeline in-process with an
httpx-like API, usable as a context manager. Each check compares TestClient's answer with the
socket server's answer for the same app: framework behaviour (405/404 problems, HEAD, header
normalisation, JSON errors) must be identical, which a Python re-implementation would not be."""

import pytest
from rawhttp import assert_problem

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def routing_server(serve):
    return serve("routing_app")


@pytest.fixture(scope="module")
def request_server(serve):
    return serve("request_app")


@pytest.fixture(scope="module")
def tc(load_app):
    from cello.testing import TestClient

    with TestClient(load_app("routing_app").app) as client:
        yield client


@pytest.fixture(scope="module")
def tc_request(load_app):
    from cello.testing import TestClient

    with TestClient(load_app("request_app").app) as client:
        yield client


@pytest.fixture(scope="module")
def tc_returns(load_app):
    from cello.testing import TestClient

    with TestClient(load_app("returns_app").app) as client:
        yield client


def allow_set(headers) -> set[str]:
    return {m.strip().upper() for m in headers["allow"].split(",") if m.strip()}


def test_get_json_status_headers(tc):
    resp = tc.get("/items")
    assert resp.status_code == 200
    assert resp.json() == {"method": "GET", "items": [1, 2, 3]}
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["Content-Type"] == resp.headers["content-type"]


def test_post_json(tc):
    resp = tc.post("/echo-json", json={"a": [1, {"b": None}]})
    assert resp.status_code == 200
    assert resp.json() == {"received": {"a": [1, {"b": None}]}}


def test_other_methods(tc):
    assert tc.put("/items/3").json() == {"method": "PUT", "id": "3"}
    assert tc.patch("/items/3").json() == {"method": "PATCH", "id": "3"}
    assert tc.delete("/items/3").json() == {"method": "DELETE", "id": "3"}
    assert tc.post("/items").status_code == 201


def test_usable_without_network(tc):
    assert tc.get("/api/v1/status").json() == {"blueprint": "v1"}


def test_405_identical_to_socket_server(tc, routing_server):
    import httpx

    ours = tc.delete("/items")
    theirs = httpx.delete(routing_server.url("/items"), timeout=5)
    assert_problem(ours, 405)
    assert_problem(theirs, 405)
    assert allow_set(ours.headers) == allow_set(theirs.headers)
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.json() == theirs.json()


def test_404_and_constraint_failure_identical_to_socket_server(tc, routing_server):
    import httpx

    for path in ("/nowhere", "/num/abc", "/slug/UPPER"):
        ours = tc.get(path)
        theirs = httpx.get(routing_server.url(path), timeout=5)
        assert_problem(ours, 404)
        assert ours.json() == theirs.json(), path


def test_head_identical_to_socket_server(tc, routing_server):
    import httpx

    ours = tc.head("/items")
    theirs = httpx.head(routing_server.url("/items"), timeout=5)
    assert ours.status_code == theirs.status_code == 200
    assert ours.content == b""
    assert ours.headers.get("content-length") == theirs.headers.get("content-length")
    assert ours.headers["content-type"] == theirs.headers["content-type"]


def test_options_identical_to_socket_server(tc, routing_server):
    import httpx

    ours = tc.options("/items")
    theirs = httpx.options(routing_server.url("/items"), timeout=5)
    assert ours.status_code == theirs.status_code
    assert allow_set(ours.headers) == allow_set(theirs.headers)


def test_bad_json_identical_to_socket_server(tc, routing_server):
    import httpx

    body = b'{\n  "a": 1,\n  "b": }\n'
    headers = {"Content-Type": "application/json"}
    ours = tc.post("/echo-json", content=body, headers=headers)
    theirs = httpx.post(routing_server.url("/echo-json"), content=body, headers=headers, timeout=5)
    assert_problem(ours, 400)
    assert ours.json() == theirs.json()


def test_header_normalisation_identical_to_socket_server(tc_request, request_server):
    import httpx

    headers = {"X-Mixed-Case": "m", "x-lower": "l", "X-UPPER": "u"}
    ours = tc_request.get("/header-names", headers=headers)
    theirs = httpx.get(request_server.url("/header-names"), headers=headers, timeout=5)
    assert ours.status_code == 200
    assert ours.json()["names"] == theirs.json()["names"]
    assert ours.json()["mixed"] == "m"
    assert ours.json()["scheme"] == theirs.json()["scheme"]


def test_request_client_is_set(tc_request):
    got = tc_request.get("/header-names").json()
    assert isinstance(got["client_ip"], str) and got["client_ip"], got
    assert got["client"] not in ("", "None") and "__error__" not in got["client"], got


def test_request_properties_through_testclient(tc_request):
    got = tc_request.get(
        "/inspect/zed?tag=a&tag=b&n=1", headers={"X-Custom": "v", "Cookie": "a=1; b=2", "User-Agent": "tc"}
    ).json()
    assert got["method"] == "GET"
    assert got["path"] == "/inspect/zed"
    assert got["params"] == {"name": "zed"}
    assert got["tags"] == ["a", "b"]
    assert got["header_get_upper"] == "v"
    assert got["cookies"] == {"a": "1", "b": "2"}
    assert got["user_agent"] == "tc"
    assert isinstance(got["request_id"], str) and got["request_id"]


def test_form_and_json_through_testclient(tc_request):
    assert tc_request.post("/json", json={"x": [1]}).json() == {"data": {"x": [1]}, "cached": True}
    got = tc_request.post("/form", data={"name": "Ada", "lang": "en"}).json()
    assert got["name"] == "Ada" and got["is_form"] is True


def test_return_conventions_through_testclient(tc_returns):
    assert tc_returns.get("/str").json() == 'hello "world"'
    resp = tc_returns.get("/bytes")
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == b"\x00\x01\xffraw"
    resp = tc_returns.get("/tuple3")
    assert resp.status_code == 202
    assert resp.headers["x-custom"] == "yes"
    assert tc_returns.get("/gen").content == b"alpha,beta,gamma"
    assert tc_returns.get("/agen").content == b"alpha,beta,gamma"
    assert tc_returns.get("/pydantic").json() == {"name": "cello", "price": 9.5, "tags": ["a", "b"]}


def test_context_manager_in_a_test_body(load_app):
    from cello.testing import TestClient

    with TestClient(load_app("routing_app").app) as client:
        assert client.get("/ping").json() == {"pong": True}
    with TestClient(load_app("routing_app").app) as client:  # a second client for the same app
        assert client.get("/ping").status_code == 200


def test_httpx_like_params_text_content(tc_request):
    resp = tc_request.get("/typed/3", params={"s": "hello", "n": "4"})
    assert resp.status_code == 200
    got = resp.json()
    assert got["s"] == "hello" and got["n"] == 4 and got["param_int"] == 3
    assert isinstance(resp.text, str) and '"hello"' in resp.text
    assert isinstance(resp.content, bytes) and resp.content.decode() == resp.text


def test_limits_apply_through_testclient(load_app):
    """limits_app's max_body_size (10 MiB) is enforced by the Rust pipeline under TestClient too."""
    from cello.testing import TestClient

    with TestClient(load_app("limits_app").app) as client:
        assert client.post("/upload", content=b"z" * 1000).json() == {"size": 1000}
        assert_problem(client.post("/upload", content=b"z" * (10 * 1024 * 1024 + 1)), 413)
