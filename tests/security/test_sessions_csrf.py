"""Security suite (issue 11): what an auditor sends at the session and CSRF layers. Every
case names the expected status. Server: tests/apps/session_app.py over a real socket."""

import base64

import httpx
import pytest
from session_helpers import SECRET, Jar, attrs, set_cookies, value

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cookie_app(serve):
    return serve("session_app", env={"CELLO_TEST_SESSION_STORE": "cookie", "CELLO_SECRET_KEY": SECRET})


@pytest.fixture(scope="module")
def memory_app(serve):
    return serve("session_app", env={"CELLO_TEST_SESSION_STORE": "memory", "CELLO_SECRET_KEY": SECRET})


@pytest.fixture(scope="module")
def csrf_app(serve):
    env = {"CELLO_TEST_SESSION_STORE": "memory", "CELLO_TEST_CSRF": "1", "CELLO_SECRET_KEY": SECRET}
    return serve("session_app", env=env)


def login(server, user="alice") -> Jar:
    jar = Jar(server)
    assert jar.post("/login", json={"user": user}).status_code == 200
    return jar


def test_session_cookie_tampering_yields_empty_session(cookie_app):
    """Expected: 200 with an empty session for every edit of the cookie, never 500."""
    jar = login(cookie_app)
    good = jar.cookies["session_id"]
    assert jar.get("/whoami").json() == {"user": "alice"}
    raw = base64.b64decode(good)
    flipped = [
        base64.b64encode(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :]).decode()
        for i in (0, len(raw) // 2, len(raw) - 1)
    ]
    for forged in [*flipped, good[:-4], good + "AAAA", "", "x" * 5000, "{}", "%00%ff"]:
        resp = httpx.get(cookie_app.url("/session"), headers={"Cookie": f"session_id={forged}"}, timeout=5)
        assert resp.status_code == 200, forged
        assert resp.json()["session"] == {}, forged
        # And it cannot be used to log in as anyone.
        resp = httpx.get(cookie_app.url("/whoami"), headers={"Cookie": f"session_id={forged}"}, timeout=5)
        assert resp.status_code == 401


def test_session_data_is_not_readable_in_the_cookie(cookie_app):
    """Expected: the cookie store encrypts; the user name is not in the cookie."""
    jar = login(cookie_app, "carol-the-user")
    assert "carol" not in jar.cookies["session_id"]
    assert b"carol" not in base64.b64decode(jar.cookies["session_id"])


def test_session_replay_after_logout(memory_app):
    """Expected: 401 on the replayed cookie after logout (server store: the record is gone)."""
    jar = login(memory_app)
    stolen = jar.cookies["session_id"]
    assert jar.get("/whoami").status_code == 200
    resp = jar.post("/logout")
    assert resp.status_code == 200
    assert "Max-Age=0" in set_cookies(resp)["session_id"]
    replay = httpx.get(memory_app.url("/whoami"), headers={"Cookie": f"session_id={stolen}"}, timeout=5)
    assert replay.status_code == 401


def test_session_fixation_login_rotates_the_id(memory_app):
    """Expected: 401 with the pre-login (fixated) id once the victim logged in."""
    jar = Jar(memory_app)
    jar.get("/count")  # the attacker plants this anonymous session id
    planted = jar.cookies["session_id"]
    jar.post("/login", json={"user": "victim"})
    assert jar.cookies["session_id"] != planted
    resp = httpx.get(memory_app.url("/whoami"), headers={"Cookie": f"session_id={planted}"}, timeout=5)
    assert resp.status_code == 401


def test_unsigned_session_ids_are_ignored(memory_app):
    """Expected: 200 and an empty session for a guessed/unsigned id."""
    for guess in ["A" * 43, "../../etc/passwd", "cello:session:*"]:
        resp = httpx.get(memory_app.url("/session"), headers={"Cookie": f"session_id={guess}"}, timeout=5)
        assert (resp.status_code, resp.json()["session"]) == (200, {})


def test_cookie_flags(cookie_app):
    """Expected: HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age from max_age."""
    resp = Jar(cookie_app).post("/login", json={"user": "a"})
    line = set_cookies(resp)["session_id"]
    assert {"HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=3600"} <= attrs(line)


def test_csrf_missing_forged_and_cross_session_tokens(csrf_app):
    """Expected: 403 problem+json for every unsafe request without the right token."""
    victim = Jar(csrf_app)
    victim.get("/token")
    token = victim.cookies["csrftoken"]
    attacker = Jar(csrf_app)
    attacker.get("/token")
    their = attacker.cookies["csrftoken"]
    cases = {
        "no cookie, no token": ({}, None),
        "cookie, no token": (victim.header(), None),
        "cookie, empty token": (victim.header(), ""),
        "cookie, forged token": (victim.header(), "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        "the attacker's token in the victim's session": (
            {"Cookie": f"session_id={victim.cookies['session_id']}; csrftoken={their}"},
            their,
        ),
        "the victim's token replayed in the attacker's session": (
            {"Cookie": f"session_id={attacker.cookies['session_id']}; csrftoken={token}"},
            token,
        ),
        "token without its session": ({"Cookie": f"csrftoken={token}"}, token),
    }
    for why, (headers, sent) in cases.items():
        h = dict(headers)
        if sent is not None:
            h["X-CSRF-Token"] = sent
        resp = httpx.post(csrf_app.url("/submit"), headers=h, timeout=5)
        assert resp.status_code == 403, why
        assert resp.headers["content-type"] == "application/problem+json", why
        assert resp.json()["status"] == 403, why
    # The genuine pair passes.
    assert victim.post("/submit", headers={"X-CSRF-Token": token}).status_code == 200


def test_csrf_token_is_replaced_after_logout(csrf_app):
    """Expected: 403 for the pre-logout token (the session, and so the binding, changed)."""
    jar = Jar(csrf_app)
    jar.get("/token")
    old_token, old_session = jar.cookies["csrftoken"], jar.cookies["session_id"]
    assert jar.post("/login", json={"user": "u"}, headers={"X-CSRF-Token": old_token}).status_code == 200
    new_token = jar.cookies["csrftoken"]
    assert new_token != old_token
    assert jar.post("/logout", headers={"X-CSRF-Token": new_token}).status_code == 200
    replay = httpx.post(
        csrf_app.url("/submit"),
        headers={"Cookie": f"session_id={old_session}; csrftoken={old_token}", "X-CSRF-Token": old_token},
        timeout=5,
    )
    assert replay.status_code == 403


def test_csrf_cookie_flags(csrf_app):
    """Expected: SameSite=Lax, not HttpOnly (scripts copy it into the header), no Secure over HTTP."""
    resp = httpx.get(csrf_app.url("/token"), timeout=5)
    line = set_cookies(resp)["csrftoken"]
    assert "SameSite=Lax" in attrs(line) and "HttpOnly" not in attrs(line) and "Secure" not in attrs(line)
    assert value(line) == resp.json()["token"]


def test_safe_methods_are_exempt(csrf_app):
    """Expected: 200 for GET/HEAD/OPTIONS without any token."""
    assert httpx.get(csrf_app.url("/session"), timeout=5).status_code == 200
    assert httpx.head(csrf_app.url("/session"), timeout=5).status_code == 200
    assert httpx.options(csrf_app.url("/session"), timeout=5).status_code in (200, 204)
