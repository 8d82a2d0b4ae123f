"""Issue 11: authentication and rate limiting layers. ``CELLO_TEST_AUTH`` picks the setup:

- ``jwt``: HS256 with issuer/audience, cookie ``jwt``, leeway 2 s, ``/public/*`` excluded.
- ``jwt_rs``: RS256 with the PEM public key in ``CELLO_TEST_JWT_PUBLIC_KEY``.
- ``jwks``: RS256 keys from the JWKS file ``CELLO_TEST_JWKS``.
- ``apikey``: keys in a header or the ``api_key`` query parameter.
- ``basic``: users with plain, bcrypt and argon2 passwords (hashes in env).
- ``basic_verify``: a Python ``verify`` callable.
- ``rate``: token bucket (``CELLO_TEST_RATE``: capacity,refill) per IP, a per-route sliding
  window on ``/limited``; ``CELLO_TEST_RATE_BACKEND=redis`` counts in Redis.
- ``rate_adaptive``: adaptive limit; ``/fail`` answers 500.
``CELLO_TEST_TRUSTED_PROXIES`` (comma-separated) is passed to ``set_trusted_proxies``.
"""

import os

from cello import App, JwtConfig, RateLimitConfig
from cello.guards import Authenticated, RoleGuard

app = App()
app.enable_health_checks()
mode = os.environ.get("CELLO_TEST_AUTH", "jwt")
SECRET = "0123456789abcdef0123456789abcdef-test"

_proxies = os.environ.get("CELLO_TEST_TRUSTED_PROXIES")
if _proxies:
    app.set_trusted_proxies([p.strip() for p in _proxies.split(",")])

if mode == "jwt":
    app.enable_jwt(
        JwtConfig(SECRET, issuer="https://issuer.test", audience="cello-tests", cookie_name="jwt", leeway=2),
        exclude_paths=["/public/*", "/open"],
    )
elif mode == "jwt_rs":
    app.enable_jwt(JwtConfig(os.environ["CELLO_TEST_JWT_PUBLIC_KEY"], algorithm="RS256"))
elif mode == "jwks":
    app.enable_jwt(JwtConfig("", algorithm="RS256", jwks_path=os.environ["CELLO_TEST_JWKS"]))
elif mode == "apikey":
    app.enable_api_key(
        {"key-alice": {"sub": "alice", "roles": ["admin"]}, "key-bob": {"sub": "bob", "roles": []}},
        query_param="api_key",
        exclude_paths=["/open"],
    )
elif mode == "basic":
    app.enable_basic_auth(
        users={
            "plain": "s3cret",
            "bc": os.environ.get("CELLO_TEST_BCRYPT", "x"),
            "ar": os.environ.get("CELLO_TEST_ARGON2", "x"),
        },
        realm="tests",
        exclude_paths=["/open"],
    )
elif mode == "basic_verify":
    app.enable_basic_auth(verify=lambda user, password: (user, password) == ("py", "thon"), realm="py")
elif mode in ("rate", "rate_adaptive"):
    if mode == "rate":
        capacity, refill = (float(x) for x in os.environ.get("CELLO_TEST_RATE", "5,0.01").split(","))
        cfg = RateLimitConfig.token_bucket(int(capacity), refill)
        key_by = os.environ.get("CELLO_TEST_RATE_KEY")
        if key_by:
            cfg.key_by = key_by
    else:
        cfg = RateLimitConfig.adaptive(40, 100.0, 4, 0.2)
    if os.environ.get("CELLO_TEST_RATE_BACKEND") == "redis":
        cfg.backend = "redis"
    app.enable_rate_limit(cfg)


@app.get("/me")
def me(request):
    return {"user": request.context.get("user")}


@app.get("/admin", guards=[RoleGuard(["admin"])])
def admin(request):
    return {"ok": True}


@app.get("/authed", guards=[Authenticated()])
def authed(request):
    return {"ok": True}


@app.get("/open")
def open_route(request):
    return {"user": request.context.get("user")}


@app.get("/public/{name}")
def public(request):
    return {"user": request.context.get("user")}


@app.get("/limited", rate_limit=RateLimitConfig.sliding_window(2, 60))
def limited(request):
    return {"ok": True}


@app.get("/fail")
def fail(request):
    return {"error": True}, 500


@app.get("/pid")
def pid(request):
    return {"pid": os.getpid()}


if __name__ == "__main__":
    app.run()
