"""Routing fixture: every HTTP method, path params, typed constraints, nested blueprints,
explicit HEAD/OPTIONS handlers. Also used for keep-alive, pipelining and HTTP/2 checks."""

import math
import re
import time

from cello import App, Blueprint, Response

app = App()


@app.get("/ping")
def ping(request):
    return {"pong": True}


@app.get("/items")
def list_items(request):
    return {"method": request.method, "items": [1, 2, 3]}


@app.post("/items")
def create_item(request):
    return {"method": request.method}, 201


@app.put("/items/{id}")
def replace_item(request):
    return {"method": request.method, "id": request.params["id"]}


@app.patch("/items/{id}")
def update_item(request):
    return {"method": request.method, "id": request.params["id"]}


@app.delete("/items/{id}")
def delete_item(request):
    return {"method": request.method, "id": request.params["id"]}


@app.get("/items/{id}")
def get_item(request):
    return {"method": request.method, "id": request.params["id"]}


@app.head("/probe")
def probe_head(request):
    return Response(None, status=200, headers={"X-Probe": "head"})


@app.options("/probe")
def probe_options(request):
    return Response(None, status=204, headers={"X-Probe": "options", "Allow": "HEAD, OPTIONS"})


@app.route("/multi", methods=["GET", "POST"])
def multi(request):
    return {"method": request.method}


@app.route("/default-get")
def default_get(request):
    return {"method": request.method}


@app.get("/users/me")
def user_me(request):
    return {"me": True}


@app.get("/code/{code:re([0-9]{3})}")
def by_code(request):
    return {"code": request.params["code"]}


@app.get("/users/{name}")
def user(request):
    return {"name": request.params["name"]}


@app.get("/users/{name}/posts/{post_id}")
def user_post(request):
    return {"name": request.params["name"], "post_id": request.params["post_id"]}


@app.get("/num/{id:int}")
def by_int(request):
    return {"id": int(request.params["id"])}


@app.get("/uuid/{id:uuid}")
def by_uuid(request):
    return {"id": str(request.params["id"])}


@app.get("/slug/{slug:re(^[a-z-]+$)}")
def by_slug(request):
    return {"slug": request.params["slug"]}


@app.get("/n/{n}")
def numbered(request):
    return {"n": request.params["n"]}


@app.post("/echo")
def echo(request):
    return Response.binary(request.body())


@app.post("/echo-json")
def echo_json(request):
    return {"received": request.json()}


@app.get("/big")
def big(request):
    return Response.text("x" * 100_000)


def hold_gil(seconds: float) -> None:
    """Hold the GIL for about `seconds` in one C call (the regex engine never releases it)."""
    pattern = re.compile(r"(a+)+$")
    n, took = 14, 0.0
    while took < 0.02:  # calibrate on short matches; each extra "a" doubles the time
        n += 1
        start = time.perf_counter()
        pattern.match("a" * n + "b")
        took = time.perf_counter() - start
    n += max(0, round(math.log2(seconds / took)))
    pattern.match("a" * n + "b")


@app.get("/hold-gil")
def hold_gil_route(request):
    hold_gil(1.5)
    return {"held": True}


api = Blueprint("/api")
v1 = Blueprint("/v1")


@api.get("/health")
def api_health(request):
    return {"blueprint": "api"}


@v1.get("/status")
def v1_status(request):
    return {"blueprint": "v1"}


@v1.post("/things/{id:int}")
def v1_things(request):
    return {"blueprint": "v1", "id": int(request.params["id"])}, 201


# API.md names app.register_blueprint(bp); the nested registration method is not named there.
(getattr(api, "register_blueprint", None) or api.register)(v1)
app.register_blueprint(api)


if __name__ == "__main__":
    app.run()
