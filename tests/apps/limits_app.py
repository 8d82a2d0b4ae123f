"""Limits and timeouts: 10 MB bodies, default 8 KiB headers, read_header=1 s, idle=2 s, read_body=2 s,
handler=2 s."""

import asyncio

from cello import App, LimitsConfig, TimeoutConfig

app = App()
app.set_limits(LimitsConfig(max_body_size=10 * 1024 * 1024))
app.set_timeouts(TimeoutConfig(read_header=1, idle=2, read_body=2, handler=2))


@app.get("/ping")
def ping(request):
    return {"pong": True}


@app.post("/upload")
def upload(request):
    return {"size": len(request.body())}


@app.get("/slow-async")
async def slow_async(request):
    await asyncio.sleep(6)
    return {"slept": True}


if __name__ == "__main__":
    app.run()
