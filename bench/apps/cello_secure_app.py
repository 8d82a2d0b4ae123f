"""Cello benchmark app with the issue-11 layers on: JWT (HS256), a token-bucket rate limit
far above the benchmark rate, and cookie sessions. The same endpoints as cello_app.py; the
`cello-secure` target in targets.toml sends the matching `Authorization: Bearer` header
(`request_headers`). Requests carry no session cookie, so the session layer's cost measured
is the per-request slot and cookie lookup, not a decryption."""

import os
import sys

from cello import App, JwtConfig, RateLimitConfig, Response, SessionConfig

SECRET = "cello-bench-secret-0123456789abcdef"

app = App()
app.enable_rate_limit(RateLimitConfig.token_bucket(1_000_000_000, 1_000_000_000.0))
app.enable_jwt(JwtConfig(SECRET))
app.enable_session(SessionConfig(secret=SECRET + "-sessions"))


@app.get("/")
def home(request):
    return {"message": "Hello, World!"}


@app.get("/plaintext")
def plaintext(request):
    return Response.text("Hello, World!")


@app.get("/users/{id}")
def user(request):
    return {"id": int(request.params["id"])}


@app.post("/echo")
def echo(request):
    return request.json()


if __name__ == "__main__":
    os.environ.setdefault("CELLO_ENV", "production")
    args = sys.argv[1:]
    opt = {k.lstrip("-"): v for k, v in zip(args[::2], args[1::2])}
    app.run(host=opt.get("host", "127.0.0.1"), port=int(opt.get("port", "8000")),
            workers=int(opt.get("workers", "1")), env="production", logs=False)
