"""timeouts.write = 1 s: a client that stops reading a large response is cut off."""

from cello import App, TimeoutConfig

app = App()
app.set_timeouts(TimeoutConfig(write=1))
BIG = b"x" * (64 * 1024 * 1024)


@app.get("/big")
def big(request):
    return BIG


@app.get("/small")
def small(request):
    return {"ok": True}


if __name__ == "__main__":
    app.run()
