"""The app `bench/soak.py` serves with `cello run --workers 2`: a mix of what real traffic does
(small JSON, JSON echo, a streamed body, a static file, an await)."""

import asyncio
import os

from cello import App, Response

app = App()
STATIC = os.environ.get("SOAK_STATIC", "/tmp")


@app.get("/json")
def json_route(request):
    return {"message": "Hello, World!", "pid": os.getpid()}


@app.post("/echo")
def echo(request):
    return request.json()


@app.get("/stream")
def stream(request):
    def chunks():
        for i in range(16):
            yield f"chunk {i:04d} ".encode() * 64

    return Response.stream(chunks())


@app.get("/static/{rest:path}")
def static(request):
    return Response.file(request.params["rest"], root=STATIC)


@app.get("/wait")
async def wait(request):
    await asyncio.sleep(0.005)
    return {"waited": True}
