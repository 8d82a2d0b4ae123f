"""Issue 10 (edge middleware): CORS, request ids, security headers with a CSP nonce,
compression, ETags, exception mapping, body limits, the access-log layer and Python
middleware, all on one app. Run with --access-log to see the log lines."""

import asyncio
import os
import threading

from cello import CSP, App, Response, SecurityHeadersConfig

app = App()
app.enable_request_id()
app.enable_cors(
    origins=["https://app.example.com", "https://*.example.org"],
    headers=["Content-Type", "X-Token"],
    credentials=True,
    max_age=600,
    expose_headers=["X-Request-ID"],
)
headers = SecurityHeadersConfig.secure()
headers.permissions_policy = "camera=(), geolocation=()"
headers.cross_origin_opener_policy = "same-origin"
headers.csp = CSP().default_src(["self"]).script_src(["self", "nonce"])
app.enable_security_headers(headers)
app.enable_compression(min_size=64)
app.enable_etag()
app.enable_body_limit(4096)
app.enable_logging(exclude_paths=["/quiet", "/health*"], format=os.environ.get("EDGE_LOG_FORMAT", "common"))

BIG = "cello " * 2000
calls = {"cors": 0}


@app.get("/hello")
def hello(request):
    return {"hello": "world"}


@app.get("/big")
def big(request):
    return Response.text(BIG)


@app.get("/png")
def png(request):
    return Response.binary(b"\x89PNG" + b"\0" * 5000, content_type="image/png")


@app.get("/sse")
def sse(request):
    return Response(b"data: x\n\n" * 500, content_type="text/event-stream")


@app.get("/encoded")
def encoded(request):
    return Response(b"x" * 5000, headers={"Content-Encoding": "gzip"}, content_type="text/plain")


@app.get("/empty")
def empty(request):
    return Response.no_content()


release = threading.Event()


@app.get("/stream")
async def stream(request):
    async def chunks():
        yield "first chunk " * 20
        # Wait until the client saw the first chunk: proves it is not buffered.
        for _ in range(500):
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        yield "second chunk " * 20

    return Response.stream(chunks(), content_type="text/plain")


@app.post("/release")
def do_release(request):
    release.set()
    return {"ok": True}


@app.get("/id")
def rid(request):
    return {"id": request.request_id()}


@app.get("/nonce")
def nonce(request):
    return Response.html(f"<script nonce='{request.csp_nonce()}'>1</script>")


@app.get("/own-frame")
def own_frame(request):
    return Response("framed", headers={"X-Frame-Options": "SAMEORIGIN"}, content_type="text/plain")


@app.get("/boom")
def boom(request):
    raise RuntimeError("boom")


@app.get("/quiet")
def quiet(request):
    return {"quiet": True}


DOC = {"version": 1}


@app.get("/doc")
def get_doc(request):
    return DOC


@app.put("/doc")
def put_doc(request):
    DOC["version"] += 1
    return DOC


@app.get("/dated")
def dated(request):
    return Response("dated", headers={"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}, content_type="text/plain")


@app.post("/upload")
def upload(request):
    return {"size": len(request.body())}


@app.post("/small", max_body_size=16)
def small(request):
    return {"size": len(request.body())}


@app.post("/small-async", max_body_size=16)
async def small_async(request):
    return {"size": len(request.body())}


if __name__ == "__main__":
    app.run()
