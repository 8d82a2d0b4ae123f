"""Issue 10, every edge layer on one app: request id, access log (template format), CORS,
security headers with a CSP nonce, compression, ETags, a per-route rate limit, the response
cache, the circuit breaker, body limits, a static mount, exception mapping and Python
middleware. tests/integration/test_edge_order.py checks over a socket that each layer sits
where docs/middleware.md says. EDGE_STATIC names the static directory."""

import asyncio
import collections
import os

from cello import (
    CSP,
    App,
    HTTPException,
    RateLimitConfig,
    Response,
    SecurityHeadersConfig,
    StaticFilesConfig,
    TimeoutConfig,
)

app = App()
app.enable_request_id()
app.enable_logging(exclude_paths=["/calls"], format="edge {method} {path} {status} rid={request_id}")
app.enable_cors(origins=["https://app.example.com"], credentials=True, expose_headers=["X-Request-ID"])
headers = SecurityHeadersConfig()  # no hsts_max_age: no HSTS header
headers.cross_origin_embedder_policy = "require-corp"
headers.cross_origin_resource_policy = "same-origin"
# Directives given out of order: the header has them in the fixed order.
headers.csp = CSP().img_src(["self"]).script_src(["self", "nonce"]).default_src(["none"])
app.enable_security_headers(headers)
app.enable_compression(min_size=64)
app.enable_etag()
app.enable_caching(ttl=60, exclude_paths=["/calls", "/limited", "/upload", "/fail", "/slow", "/boom"])
app.enable_circuit_breaker(failure_threshold=2, reset_timeout=60)
app.enable_body_limit(1024)
app.set_timeouts(TimeoutConfig(handler=1.5))
if os.environ.get("EDGE_STATIC"):
    app.enable_static_files(StaticFilesConfig(root=os.environ["EDGE_STATIC"], prefix="/assets"))

calls: collections.Counter = collections.Counter()
BIG = "cello edge " * 500


@app.use
def counting(request, call_next):
    """Counts every request that reaches Python middleware, by path."""
    calls["mw:" + request.path] += 1
    response = call_next(request)
    response.set_header("X-Py-MW", "1")
    return response


@app.get("/calls")
def get_calls(request):
    return dict(calls)


@app.get("/hello")
def hello(request):
    calls["hello"] += 1
    return {"hello": "world"}


@app.get("/big")
def big(request):
    calls["big"] += 1
    return Response.text(BIG)


@app.get("/archive")
def archive(request):
    return Response.binary(b"PK\x03\x04" + b"\0" * 4000, content_type="application/zip")


@app.get("/page")
def page(request):
    calls["page"] += 1
    return Response.html(f"<script nonce='{request.csp_nonce()}'>1</script>" + "<p>x</p>" * 50)


@app.get("/own-csp")
def own_csp(request):
    return Response("own", headers={"Content-Security-Policy": "default-src 'self'"}, content_type="text/plain")


@app.get("/limited", rate_limit=RateLimitConfig.token_bucket(1, 0.001))
def limited(request):
    calls["limited"] += 1
    return {"ok": True}


@app.post("/upload")
def upload(request):
    calls["upload"] += 1
    return {"size": len(request.body())}


@app.get("/boom")
def boom(request):
    raise RuntimeError("boom")


@app.get("/fail/{id:int}")
def fail(request):
    calls["fail"] += 1
    raise HTTPException(502, "upstream down")


@app.get("/slow")
async def slow(request):
    calls["slow"] += 1
    await asyncio.sleep(30)
    return {"late": True}


if __name__ == "__main__":
    app.run()
