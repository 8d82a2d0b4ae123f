"""max_connections=5 (one worker)."""

from cello import App, LimitsConfig

app = App()
app.set_limits(LimitsConfig(max_connections=5))


@app.get("/ping")
def ping(request):
    return {"pong": True}


if __name__ == "__main__":
    app.run()
