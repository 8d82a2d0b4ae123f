"""Issue 11, items 1-3 and 7: JWT, API keys, Basic auth and guards, over real sockets.
Rejections come from the Rust layers (401 problem+json with a challenge)."""

import json
import time

import argon2
import bcrypt
import httpx
import pytest
from auth_helpers import ISS, basic, good_claims, hs256, jwk, public_pem, rsa_key

pytestmark = pytest.mark.timeout(60)


def get(server, path, **kw):
    return httpx.get(server.url(path), timeout=5, **kw)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_401(resp, scheme):
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith(scheme), resp.headers
    assert resp.json()["status"] == 401


@pytest.fixture(scope="module")
def jwt_app(serve):
    return serve("auth_app", env={"CELLO_TEST_AUTH": "jwt"})


# ---- JWT ---------------------------------------------------------------------------------


def test_jwt_valid_token_puts_claims_in_context(jwt_app):
    resp = get(jwt_app, "/me", headers=bearer(hs256(good_claims())))
    assert resp.status_code == 200, resp.text
    user = resp.json()["user"]
    assert user["sub"] == "alice" and user["roles"] == ["admin"] and user["iss"] == ISS


def test_jwt_missing_token_is_401_with_bearer_error(jwt_app):
    resp = get(jwt_app, "/me")
    assert_401(resp, "Bearer")
    assert 'error="' in resp.headers["www-authenticate"]


def test_jwt_bad_token_is_401_invalid_token(jwt_app):
    resp = get(jwt_app, "/me", headers=bearer("not.a.token"))
    assert_401(resp, "Bearer")
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def test_jwt_not_bearer_scheme_is_401(jwt_app):
    assert_401(get(jwt_app, "/me", headers={"Authorization": "Token " + hs256(good_claims())}), "Bearer")


def test_jwt_from_cookie(jwt_app):
    resp = get(jwt_app, "/me", cookies={"jwt": hs256(good_claims())})
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"]["sub"] == "alice"


def test_jwt_leeway_applies_to_exp(jwt_app):
    now = int(time.time())
    # expired 1 s ago, leeway 2 s: accepted; expired 30 s ago: refused.
    assert get(jwt_app, "/me", headers=bearer(hs256(good_claims(exp=now - 1)))).status_code == 200
    assert_401(get(jwt_app, "/me", headers=bearer(hs256(good_claims(exp=now - 30)))), "Bearer")


def test_jwt_a_remembered_token_is_refused_once_it_expires(jwt_app):
    # Verified tokens are remembered per worker; the remembered one must still expire.
    exp = int(time.time()) + 1
    token = hs256(good_claims(exp=exp))
    for _ in range(3):  # the first verifies and remembers, the next come from the cache
        assert get(jwt_app, "/me", headers=bearer(token)).status_code == 200
    deadline = time.monotonic() + 15
    while True:
        resp = get(jwt_app, "/me", headers=bearer(token))
        if resp.status_code != 200:
            break
        assert time.monotonic() < deadline, "the remembered token was never refused"
        time.sleep(0.2)
    assert_401(resp, "Bearer")
    assert "expired" in resp.headers["www-authenticate"]
    # Not before `exp` plus the 2 s leeway (the server's clock is this machine's).
    assert time.time() >= exp + 2


def test_jwt_exclude_paths_and_probes_are_not_guarded(jwt_app):
    assert get(jwt_app, "/open").status_code == 200
    assert get(jwt_app, "/public/x").json() == {"user": None}
    assert get(jwt_app, "/health/live").status_code == 200
    # an excluded path ignores even a bad token
    assert get(jwt_app, "/open", headers=bearer("garbage")).status_code == 200


def test_authenticated_guard_after_jwt(jwt_app):
    assert get(jwt_app, "/authed", headers=bearer(hs256(good_claims()))).status_code == 200


def test_jwt_rs256_public_key(serve):
    key = rsa_key()
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "jwt_rs", "CELLO_TEST_JWT_PUBLIC_KEY": public_pem(key).decode()})
    import jwt

    token = jwt.encode({"sub": "rs"}, key, algorithm="RS256")
    resp = get(server, "/me", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == {"sub": "rs"}
    other = jwt.encode({"sub": "rs"}, rsa_key(), algorithm="RS256")
    assert_401(get(server, "/me", headers=bearer(other)), "Bearer")


def test_jwt_jwks_selects_key_by_kid(serve, tmp_path):
    import jwt

    k1, k2 = rsa_key(), rsa_key()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk(k1, "one"), jwk(k2, "two")]}))
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "jwks", "CELLO_TEST_JWKS": str(path)})
    ok = jwt.encode({"sub": "k2"}, k2, algorithm="RS256", headers={"kid": "two"})
    assert get(server, "/me", headers=bearer(ok)).json()["user"] == {"sub": "k2"}
    wrong_kid = jwt.encode({"sub": "k2"}, k2, algorithm="RS256", headers={"kid": "one"})
    assert_401(get(server, "/me", headers=bearer(wrong_kid)), "Bearer")
    unknown = jwt.encode({"sub": "k2"}, k2, algorithm="RS256", headers={"kid": "nope"})
    assert_401(get(server, "/me", headers=bearer(unknown)), "Bearer")


# ---- API keys ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_app(serve):
    return serve("auth_app", env={"CELLO_TEST_AUTH": "apikey"})


def test_api_key_header_and_identity(key_app):
    resp = get(key_app, "/me", headers={"X-API-Key": "key-alice"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == {"sub": "alice", "roles": ["admin"]}


def test_api_key_query_param(key_app):
    assert get(key_app, "/me?api_key=key-bob").json()["user"]["sub"] == "bob"


def test_api_key_missing_or_wrong_is_401(key_app):
    assert_401(get(key_app, "/me"), "ApiKey")
    assert_401(get(key_app, "/me", headers={"X-API-Key": "key-alicf"}), "ApiKey")
    assert_401(get(key_app, "/me", headers={"X-API-Key": "key-alice-and-more"}), "ApiKey")


def test_api_key_exclude_paths(key_app):
    assert get(key_app, "/open").status_code == 200


def test_role_guard_reads_the_key_identity(key_app):
    assert get(key_app, "/admin", headers={"X-API-Key": "key-alice"}).status_code == 200
    resp = get(key_app, "/admin", headers={"X-API-Key": "key-bob"})
    assert resp.status_code == 403 and resp.headers["content-type"] == "application/problem+json"
    assert get(key_app, "/admin").status_code == 401


# ---- Basic -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_app(serve):
    return serve(
        "auth_app",
        env={
            "CELLO_TEST_AUTH": "basic",
            "CELLO_TEST_BCRYPT": bcrypt.hashpw(b"bc-pass", bcrypt.gensalt(rounds=4)).decode(),
            "CELLO_TEST_ARGON2": argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash("ar-pass"),
        },
    )


def test_basic_plain_password(basic_app):
    resp = get(basic_app, "/me", headers=basic("plain", "s3cret"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == {"username": "plain"}


def test_basic_bcrypt_and_argon2_hashes(basic_app):
    assert get(basic_app, "/me", headers=basic("bc", "bc-pass")).status_code == 200
    assert get(basic_app, "/me", headers=basic("ar", "ar-pass")).status_code == 200
    assert_401(get(basic_app, "/me", headers=basic("bc", "wrong")), "Basic")
    assert_401(get(basic_app, "/me", headers=basic("ar", "wrong")), "Basic")


def test_basic_wrong_missing_and_malformed_are_401_with_realm(basic_app):
    for headers in ({}, basic("plain", "nope"), basic("ghost", "s3cret"), {"Authorization": "Basic !!!"}):
        resp = get(basic_app, "/me", headers=headers)
        assert_401(resp, "Basic")
        assert 'realm="tests"' in resp.headers["www-authenticate"]


def test_basic_exclude_paths(basic_app):
    assert get(basic_app, "/open").status_code == 200


def test_basic_python_verify(serve):
    server = serve("auth_app", env={"CELLO_TEST_AUTH": "basic_verify"})
    resp = get(server, "/me", headers=basic("py", "thon"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["user"] == {"username": "py"}
    bad = get(server, "/me", headers=basic("py", "wrong"))
    assert_401(bad, "Basic")
    assert 'realm="py"' in bad.headers["www-authenticate"]
    assert_401(get(server, "/me"), "Basic")


def test_openapi_security_schemes_follow_enable_calls():
    from cello import App, JwtConfig

    app = App()

    @app.get("/x")
    def x():
        return {}

    app.enable_jwt(JwtConfig("s" * 32))
    app.enable_api_key(["k"], header_name="X-Key")
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-Key"}
