"""Response cache fixture: every handler counts its calls, so a test sees whether a request
reached Python; /calls (excluded from the cache) reports the counts."""

import collections

from cello import App, Response, cache

app = App()
app.enable_caching(ttl=60, exclude_paths=["/calls", "/invalidate"])
app.enable_prometheus()
calls: collections.Counter = collections.Counter()


def counted(name: str) -> dict:
    calls[name] += 1
    return {"name": name, "n": calls[name]}


@app.get("/calls")
def get_calls(request):
    return dict(calls)


@app.get("/count")
def count(request):
    return counted("count:" + (request.query.get("q") or ""))


@app.get("/items/{id:int}")
@cache(ttl=60, tags=["items"])
def item(request):
    return counted("item")


@cache(ttl=1, tags=["short"])
@app.get("/short")
def short(request):
    return counted("short")


@app.get("/cookie")
def cookie(request):
    r = Response(counted("cookie"))
    r.set_cookie("sid", "abc")
    return r


@app.get("/private")
def private(request):
    return Response(counted("private"), headers={"Cache-Control": "private"})


@app.get("/no-store")
def no_store(request):
    return Response(counted("no-store"), headers={"Cache-Control": "no-store"})


@app.get("/vary")
def vary(request):
    lang = request.headers.get("accept-language") or "none"
    return Response({"lang": lang, **counted("vary")}, headers={"Vary": "Accept-Language"})


@app.get("/auth")
def auth(request):
    return counted("auth")


@app.get("/auth-public")
def auth_public(request):
    who = request.headers.get("authorization") or ""
    return Response({"who": who, **counted("auth-public")}, headers={"Cache-Control": "public"})


@app.get("/error")
def error(request):
    return Response(counted("error"), status=500)


@app.get("/stream")
def stream(request):
    calls["stream"] += 1

    def gen():
        yield b"a"
        yield b"b"

    return Response.stream(gen())


@app.get("/big")
def big(request):
    calls["big"] += 1
    return Response(b"x" * (2 * 1024 * 1024))


@app.post("/invalidate")
def invalidate(request):
    tags = request.query.get("tags")
    return {"before": app.invalidate_cache(tags.split(",") if tags else None)}


@app.post("/count")
def post_count(request):
    return counted("post")


if __name__ == "__main__":
    app.run()
