"""Routes an attacker would aim at: static files from a `{rest:path}` parameter, file responses
on whatever the test points them at (FIFOs), handler-set framing headers, JSON echo.

`SECURITY_ROOT` is the directory served as static files (the tests create it)."""

import os

from cello import App, Response

app = App()
ROOT = os.environ.get("SECURITY_ROOT", "/nonexistent")


@app.get("/static/{rest:path}")
def static_naive(request):
    # The natural handler: safe only because `{rest:path}` refuses traversal.
    return Response.file(os.path.join(ROOT, request.params["rest"]))


@app.get("/star/{*rest}")
def static_star(request):
    return Response.file(os.path.join(ROOT, request.params["rest"]))


@app.get("/rooted/{rest:path(unsafe)}")
def static_rooted(request):
    # The parameter passes anything through; `root=` is what keeps the file inside ROOT.
    return Response.file(request.params["rest"], root=ROOT)


@app.get("/rooted-send/{rest:path(unsafe)}")
def sendfile_rooted(request):
    return Response.sendfile(request.params["rest"], root=ROOT)


@app.get("/rooted-range/{rest:path(unsafe)}")
def range_rooted(request):
    return Response.file_range(request.params["rest"], request.headers.get("range"), root=ROOT)


@app.get("/unsafe/{rest:path(unsafe)}")
def echo_unsafe(request):
    return {"rest": request.params["rest"]}


@app.get("/anyfile")
def any_file(request):
    return Response.file(request.query["path"])


@app.get("/anyrange")
def any_range(request):
    return Response.file_range(request.query["path"], request.headers.get("range"))


@app.post("/echo")
def echo(request):
    return request.json()


# ---- handler-set framing headers ----------------------------------------------------------
EIGHT = b"12345678"


@app.get("/framing/short-length")
def short_length(request):
    return Response(EIGHT, headers={"Content-Length": "2"})


@app.get("/framing/long-length")
def long_length(request):
    return Response(EIGHT, headers={"Content-Length": "100"})


@app.get("/framing/tuple-length")
def tuple_length(request):
    return EIGHT, 200, {"Content-Length": "2"}


@app.get("/framing/dict-length")
def dict_length(request):
    return {"a": 1}, 200, [("Content-Length", "1"), ("Content-Length", "7")]


@app.get("/framing/te")
def te(request):
    return Response(EIGHT, headers={"Transfer-Encoding": "chunked"})


@app.get("/framing/te-gzip")
def te_gzip(request):
    return Response(EIGHT, headers={"Transfer-Encoding": "gzip"})


@app.get("/framing/hop")
def hop(request):
    return Response(EIGHT, headers={"Connection": "keep-alive, Upgrade", "Keep-Alive": "timeout=1", "Upgrade": "h2c"})


@app.get("/framing/close")
def close(request):
    return Response(EIGHT, headers={"Connection": "close"})


@app.get("/framing/stream-length")
def stream_length(request):
    def gen():
        yield b"1234"
        yield b"5678"

    r = Response.stream(gen())
    r.set_header("Content-Length", "2")
    return r


@app.get("/framing/file-length")
def file_length(request):
    r = Response.file(request.query["path"])
    r.set_header("Content-Length", "2")
    r.set_header("Transfer-Encoding", "chunked")
    return r


@app.get("/framing/empty-length")
def empty_length(request):
    return Response(None, status=200, headers={"Content-Length": "5"})


@app.route("/framing/head-length", methods=["HEAD"])
def head_length(request):
    return Response(None, headers={"Content-Length": "1234"})


@app.get("/framing/error-length")
def error_length(request):
    from cello import HTTPException

    raise HTTPException(418, "teapot", headers={"Content-Length": "1"})


if __name__ == "__main__":
    app.run()
