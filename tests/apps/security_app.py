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


if __name__ == "__main__":
    app.run()
