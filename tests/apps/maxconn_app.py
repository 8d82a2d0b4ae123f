"""max_connections=5 (one worker), max_requests_per_connection=3."""

from cello import App, LimitsConfig

app = App()
app.set_limits(LimitsConfig(max_connections=5, max_requests_per_connection=3))


@app.get("/ping")
def ping(request):
    return {"pong": True}


if __name__ == "__main__":
    app.run()
