"""Limits and timeouts: 10 MB bodies, default 8 KiB headers, read_header=1 s, idle=2 s."""

from cello import App, LimitsConfig, TimeoutConfig

app = App()
app.set_limits(LimitsConfig(max_body_size=10 * 1024 * 1024))
app.set_timeouts(TimeoutConfig(read_header=1, idle=2))


@app.get("/ping")
def ping(request):
    return {"pong": True}


@app.post("/upload")
def upload(request):
    return {"size": len(request.body())}


if __name__ == "__main__":
    app.run()
