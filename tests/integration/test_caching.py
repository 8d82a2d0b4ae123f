"""Issue 10 item 7: `enable_caching`, `@cache(ttl, tags)`, `app.invalidate_cache(tags)`.

Every handler of tests/apps/cache_app.py counts its calls; `/calls` (excluded from the cache)
reports them, so each test sees whether a request reached Python."""

from __future__ import annotations

import time

import httpx
import pytest


@pytest.fixture(scope="module")
def server(serve):
    return serve("cache_app")


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def calls(client, name: str) -> int:
    r = client.get("/calls")
    assert "x-cache" not in r.headers  # excluded path
    return r.json().get(name, 0)


def test_a_hit_never_reaches_python(client):
    first = client.get("/count?q=hit")
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    for _ in range(5):
        again = client.get("/count?q=hit")
        assert again.headers["x-cache"] == "HIT"
        assert again.content == first.content and again.headers["content-type"] == first.headers["content-type"]
        assert int(again.headers["age"]) >= 0
    assert calls(client, "count:hit") == 1
    # the query is part of the key
    assert client.get("/count?q=other").headers["x-cache"] == "MISS"
    assert calls(client, "count:other") == 1


def test_route_ttl_expires(client):
    assert client.get("/short").headers["x-cache"] == "MISS"
    assert client.get("/short").headers["x-cache"] == "HIT"
    deadline = time.monotonic() + 10
    while client.get("/short").headers["x-cache"] == "HIT":
        assert time.monotonic() < deadline, "a 1 s TTL never expired"
        time.sleep(0.1)
    assert calls(client, "short") == 2


@pytest.mark.parametrize("path", ["/cookie", "/private", "/no-store", "/error", "/stream", "/big"])
def test_never_cached(client, path):
    name = path.strip("/")
    before = calls(client, name)
    for _ in range(2):
        r = client.get(path)
        assert r.headers.get("x-cache") != "HIT", path
    assert calls(client, name) == before + 2


def test_authorization_is_cached_only_when_public_and_per_caller(client):
    before = calls(client, "auth")
    for _ in range(2):
        assert client.get("/auth", headers={"Authorization": "Bearer a"}).headers.get("x-cache") != "HIT"
    assert calls(client, "auth") == before + 2
    a1 = client.get("/auth-public", headers={"Authorization": "Bearer a"})
    a2 = client.get("/auth-public", headers={"Authorization": "Bearer a"})
    assert (a1.headers["x-cache"], a2.headers["x-cache"]) == ("MISS", "HIT")
    b = client.get("/auth-public", headers={"Authorization": "Bearer b"})
    assert b.headers["x-cache"] == "MISS" and b.json()["who"] == "Bearer b"  # never another caller's
    anon = client.get("/auth-public")
    assert anon.headers["x-cache"] == "MISS" and anon.json()["who"] == ""


def test_vary_headers_are_part_of_the_key(client):
    en = client.get("/vary", headers={"Accept-Language": "en"})
    assert en.headers["x-cache"] == "MISS" and en.json()["lang"] == "en"
    assert client.get("/vary", headers={"Accept-Language": "en"}).headers["x-cache"] == "HIT"
    fr = client.get("/vary", headers={"Accept-Language": "fr"})
    assert fr.headers["x-cache"] == "MISS" and fr.json()["lang"] == "fr"
    assert client.get("/vary", headers={"Accept-Language": "fr"}).json()["lang"] == "fr"


def test_request_no_cache_bypasses_and_post_is_not_cached(client):
    client.get("/count?q=bypass")
    before = calls(client, "count:bypass")
    r = client.get("/count?q=bypass", headers={"Cache-Control": "no-cache"})
    assert r.headers["x-cache"] == "MISS"
    assert calls(client, "count:bypass") == before + 1
    p1, p2 = client.post("/count"), client.post("/count")
    assert "x-cache" not in p1.headers and p2.json()["n"] == p1.json()["n"] + 1


def test_invalidate_by_tag(client):
    assert client.get("/items/1").headers["x-cache"] == "MISS"
    assert client.get("/items/1").headers["x-cache"] == "HIT"
    client.get("/count?q=keep")
    assert client.get("/count?q=keep").headers["x-cache"] == "HIT"
    r = client.post("/invalidate?tags=items")
    assert r.status_code == 200 and r.json()["before"] >= 2
    assert client.get("/items/1").headers["x-cache"] == "MISS"  # tagged: dropped
    assert client.get("/count?q=keep").headers["x-cache"] == "HIT"  # untagged: kept
    client.post("/invalidate")  # no tags: everything
    assert client.get("/count?q=keep").headers["x-cache"] == "MISS"


def test_head_and_metrics_untouched(client):
    assert client.get("/metrics").status_code == 200
    assert "x-cache" not in client.get("/metrics").headers  # probes are answered before the cache


def test_memory_is_bounded(serve, tmp_path):
    cfg = tmp_path / "cello.yaml"
    cfg.write_text("cache:\n  maxEntries: 5\n  maxBytes: 100000\n  maxEntryBytes: 1000\n")
    server = serve("cache_app", env={"CELLO_CONFIG": str(cfg)}, fresh=True)
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        for i in range(60):
            assert c.get(f"/count?q=b{i}").status_code == 200
        held = c.post("/invalidate").json()["before"]
        assert 1 <= held <= 5, held


def test_testclient_hits_and_invalidation():
    from cello import App, cache
    from cello.testing import TestClient

    app = App()
    n = {"v": 0}

    @app.get("/t")
    @cache(ttl=30, tags=["t"])
    def t(request):
        n["v"] += 1
        return {"v": n["v"]}

    @app.get("/uncached")
    def u(request):
        n["v"] += 1
        return {"v": n["v"]}

    with TestClient(app) as client:
        assert client.get("/t").headers["x-cache"] == "MISS"
        assert client.get("/t").json() == {"v": 1}
        assert client.get("/t").headers["x-cache"] == "HIT"
        # only @cache routes are cached without enable_caching
        assert "x-cache" not in client.get("/uncached").headers
        assert app.invalidate_cache(["t"]) >= 1
        assert client.get("/t").json() == {"v": 3}


def test_bad_arguments_are_refused():
    from cello import App, ConfigError, cache

    app = App()
    with pytest.raises((ValueError, ConfigError)):
        app.enable_caching(ttl=0)
    with pytest.raises((ValueError, ConfigError), match="cannot be cached"):
        app.enable_caching(methods=["DELETE"])
    with pytest.raises((ValueError, ConfigError)):
        app.enable_caching(exclude_paths=["nope"])
    with pytest.raises(TypeError):
        cache(ttl="soon")
