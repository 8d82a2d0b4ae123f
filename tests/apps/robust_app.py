"""Target for malformed and hostile input. Headers may total 256 KiB so that huge query strings
and header counts reach the router and the handler."""

from cello import App, LimitsConfig

app = App()
app.set_limits(LimitsConfig(max_header_size=256 * 1024))


@app.get("/ping")
def ping(request):
    return {"pong": True}


@app.get("/users/{name}")
def user(request):
    return {"name": request.params["name"]}


@app.get("/headers")
def headers(request):
    return {"x_custom": request.headers.get("x-custom"), "count": len(list(request.headers.keys()))}


@app.get("/query")
def query(request):
    q = request.query
    return {"count": len(q), "q": q.get("q")}


@app.post("/echo")
def echo(request):
    return {"size": len(request.body())}


@app.post("/json")
def parse_json(request):
    return {"data": request.json()}


if __name__ == "__main__":
    app.run()
