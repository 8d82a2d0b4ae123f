"""max_connections=5 (one worker), max_requests_per_connection=3, max_body_size=1000 (non-default)."""

from cello import App, LimitsConfig

app = App()
app.set_limits(LimitsConfig(max_connections=5, max_requests_per_connection=3, max_body_size=1000))


@app.get("/ping")
def ping(request):
    return {"pong": True}


@app.post("/upload")
def upload(request):
    return {"size": len(request.body())}


if __name__ == "__main__":
    app.run()
