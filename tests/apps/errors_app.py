"""Handler exceptions. Run with --debug or --env production."""

import asyncio

from cello import App

app = App()


@app.get("/ok")
def ok(request):
    return {"ok": True}


@app.get("/boom")
def boom_sync_handler(request):
    raise ValueError("kaboom-sync-detail")


@app.get("/aboom")
async def boom_async_handler(request):
    await asyncio.sleep(0)
    raise RuntimeError("kaboom-async-detail")


@app.get("/gen-boom")
def gen_boom(request):
    def chunks():
        yield "partial,"
        raise RuntimeError("kaboom-stream-detail")

    return chunks()


@app.post("/json")
def parse_json(request):
    return {"data": request.json()}


if __name__ == "__main__":
    app.run()
