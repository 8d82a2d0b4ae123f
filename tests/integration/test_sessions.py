"""Issue 11, items 4 and 5 over a real socket: sessions (cookie, memory and Redis stores;
saved only when changed; regenerate/clear; max_age; the 4 KB cookie limit; two workers
sharing Redis sessions; the secret rules) and CSRF (header and form field, urlencoded and
multipart; the token in `request.csrf_token()`, the context and templates; Origin/Referer
over HTTPS behind a trusted proxy)."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from auth_helpers import redis_or_skip
from session_helpers import SECRET, Jar, set_cookies

pytestmark = pytest.mark.timeout(90)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env(store, **extra):
    return {"CELLO_TEST_SESSION_STORE": store, "CELLO_SECRET_KEY": SECRET, **extra}


@pytest.fixture(params=["cookie", "memory", "redis"])
def store_app(request, serve):
    if request.param == "redis":
        redis_or_skip()
    return serve("session_app", env=env(request.param))


def test_session_round_trip_regenerate_and_clear(store_app):
    jar = Jar(store_app)
    assert jar.get("/whoami").status_code == 401
    assert jar.post("/login", json={"user": "ann"}).status_code == 200
    first = jar.cookies["session_id"]
    assert jar.get("/whoami").json() == {"user": "ann"}
    assert [jar.get("/count").json()["n"] for _ in range(3)] == [1, 2, 3]
    # regenerate() at a second login: a new cookie value, same data carried over.
    jar.post("/login", json={"user": "ann2"})
    assert jar.cookies["session_id"] != first
    assert jar.get("/session").json()["session"] == {"user": "ann2", "n": 3}
    # clear(): the cookie is deleted, the session is empty.
    resp = jar.post("/logout")
    assert "Max-Age=0" in set_cookies(resp)["session_id"]
    assert "session_id" not in jar.cookies
    assert jar.get("/whoami").status_code == 401


def test_saved_only_when_changed(store_app):
    jar = Jar(store_app)
    resp = jar.get("/session")
    assert set_cookies(resp) == {}, "an untouched empty session sets no cookie"
    jar.get("/count")
    resp = jar.get("/session")
    assert set_cookies(resp) == {}, "reading a session does not re-send it"
    assert resp.json()["session"] == {"n": 1}


def test_in_place_changes_are_saved_with_modified(store_app):
    jar = Jar(store_app)
    jar.get("/cart?item=a")
    jar.get("/cart?item=b")
    assert jar.get("/session").json()["session"] == {"cart": ["a", "b"]}


def test_cookie_store_refuses_more_than_4kb_with_a_clear_error(serve):
    server = serve("session_app", env=env("cookie"))
    jar = Jar(server)
    resp = jar.get("/big?n=5000")
    assert resp.status_code == 500
    body = resp.json()
    assert "too large for the cookie store" in body["error"] and "memory" in body["error"]
    assert body["kept"] == {}, "the refused change is undone"
    resp = jar.get("/big?n=2000")
    assert resp.status_code == 200
    assert len(set_cookies(resp)["session_id"]) <= 4096
    # The memory store has no such limit.
    server = serve("session_app", env=env("memory"))
    assert Jar(server).get("/big?n=20000").status_code == 200


@pytest.mark.parametrize("store", ["cookie", "memory"])
def test_sessions_expire_after_max_age(serve, store):
    server = serve("session_app", env=env(store, CELLO_TEST_MAX_AGE="1"))
    jar = Jar(server)
    jar.post("/login", json={"user": "short"})
    assert jar.get("/whoami").status_code == 200
    deadline = time.monotonic() + 10
    while jar.get("/whoami").status_code == 200:
        assert time.monotonic() < deadline, "the session never expired"
        time.sleep(0.2)


def test_redis_store_keeps_only_an_id_in_the_cookie_and_data_in_redis(serve):
    client = redis_or_skip()
    server = serve("session_app", env=env("redis"))
    jar = Jar(server)
    jar.post("/login", json={"user": "auth-redis-user"})
    assert "auth-redis-user" not in jar.cookies["session_id"]
    found = [k for k in client.scan_iter("cello:session:*") if b"auth-redis-user" in (client.get(k) or b"")]
    assert len(found) == 1
    ttl = client.ttl(found[0])
    assert 0 < ttl <= 3600
    jar.post("/logout")
    assert client.get(found[0]) is None, "logout deletes the record"


def test_two_workers_share_redis_sessions(serve):
    redis_or_skip()
    server = serve("session_app", "--workers", "2", env=env("redis"))
    jar = Jar(server)
    pids, n, deadline = set(), 0, time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        body = jar.get("/count").json()  # a new connection each time: SO_REUSEPORT spreads them
        n += 1
        assert body["n"] == n, f"the counter went back: {body} after {n} requests"
        pids.add(body["pid"])
    assert len(pids) == 2, f"both workers should have served: {pids}"


def run_app(extra_env, timeout=20):
    e = {k: v for k, v in os.environ.items() if k not in ("CELLO_SECRET_KEY", "CELLO_ENV")}
    e.update(extra_env)
    code = (
        "import runpy, sys; sys.argv=['x']; m = runpy.run_path('tests/apps/session_app.py'); "
        "print('READY', m['app'].server_config().get('session', {}).get('store'))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout
    )


def test_missing_secret_in_production_is_a_startup_error():
    out = run_app({"CELLO_ENV": "production"})
    assert out.returncode != 0
    assert "CELLO_SECRET_KEY" in out.stderr


def test_missing_secret_in_development_is_a_random_key_with_a_warning():
    out = run_app({"CELLO_ENV": "development"})
    assert out.returncode == 0, out.stderr
    assert "READY cookie" in out.stdout
    assert "CELLO_SECRET_KEY is not set" in out.stderr


def test_short_secret_is_refused():
    out = run_app({"CELLO_SECRET_KEY": "short"})
    assert out.returncode != 0 and "32 bytes" in out.stderr


# ---- CSRF ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csrf_app(serve):
    return serve("session_app", env=env("cookie", CELLO_TEST_CSRF="1", CELLO_TEST_TRUSTED_PROXIES="127.0.0.1"))


def test_token_is_set_on_the_first_safe_response_and_shared_with_templates(csrf_app):
    jar = Jar(csrf_app)
    resp = jar.get("/token")
    body = resp.json()
    assert body["token"] == body["context"] == body["template"] == jar.cookies["csrftoken"]
    # A second safe request keeps the token.
    resp = jar.get("/token")
    assert "csrftoken" not in set_cookies(resp)
    assert resp.json()["token"] == jar.cookies["csrftoken"]


def test_form_field_urlencoded_and_multipart(csrf_app):
    jar = Jar(csrf_app)
    jar.get("/token")
    token = jar.cookies["csrftoken"]
    resp = jar.post("/submit", data={"csrf_token": token, "name": "x"})
    assert resp.status_code == 200
    assert resp.json()["form"]["name"] == "x", "the handler still reads the whole form"
    resp = jar.post("/submit", data={"csrf_token": token, "name": "y"}, files={"f": ("a.txt", b"hello")})
    assert resp.status_code == 200
    assert resp.json()["form"]["name"] == "y"
    assert jar.post("/submit", data={"csrf_token": "nope"}).status_code == 403
    assert jar.post("/submit", data={"csrf_token": "nope"}, files={"f": ("a", b"1")}).status_code == 403
    assert jar.post("/submit", json={"csrf_token": token}).status_code == 403, "JSON bodies need the header"
    # Exempt path.
    assert httpx.post(csrf_app.url("/hook"), timeout=5).status_code == 200


def test_https_origin_and_referer_behind_a_trusted_proxy(csrf_app):
    jar = Jar(csrf_app)
    https = {"X-Forwarded-Proto": "https"}
    resp = jar.get("/token", headers=https)
    assert "Secure" in set_cookies(resp)["csrftoken"], "HTTPS (as the proxy said): a Secure token cookie"
    token = jar.cookies["csrftoken"]
    host = f"127.0.0.1:{csrf_app.port}"
    cases = [
        ({"Origin": f"https://{host}"}, 200),
        ({"Origin": "https://admin.test"}, 200),
        ({"Referer": f"https://{host}/page"}, 200),
        ({"Origin": "https://evil.test"}, 403),
        ({"Origin": f"http://{host}"}, 403),
        ({"Referer": "https://evil.test/x"}, 403),
        ({}, 403),
    ]
    for extra, want in cases:
        resp = jar.post("/submit", headers={**https, "X-CSRF-Token": token, **extra})
        assert resp.status_code == want, (extra, resp.text)
