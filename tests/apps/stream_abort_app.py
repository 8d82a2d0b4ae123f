"""Streams that fail midway (issue 9 item 1): `/sync/{n}` and `/async/{n}` yield `n` chunks
of 64 KiB, then raise. `/ok/{n}` streams `n` chunks and ends normally (the control)."""

import asyncio

from cello import App, Response

app = App()
CHUNK = b"x" * 65536


@app.get("/sync/{n:int}")
def sync_fail(request):
    n = int(request.params["n"])

    def gen():
        for _ in range(n):
            yield CHUNK
        raise RuntimeError("the stream failed midway")

    return Response.stream(gen())


@app.get("/async/{n:int}")
def async_fail(request):
    n = int(request.params["n"])

    async def gen():
        for i in range(n):
            if i % 8 == 0:
                await asyncio.sleep(0)
            yield CHUNK
        raise RuntimeError("the stream failed midway")

    return Response.stream(gen())


@app.get("/ok/{n:int}")
def ok(request):
    n = int(request.params["n"])
    return Response.stream(CHUNK for _ in range(n))


@app.get("/own-reset")
def own_reset(request):
    # A ConnectionResetError of the generator's own (an upstream went away) is a failure too.
    def gen():
        yield CHUNK
        raise ConnectionResetError("upstream reset")

    return Response.stream(gen())


if __name__ == "__main__":
    app.run()
