"""Execution-model app: async concurrency, eager coroutines, cancellation, the blocking pool."""

import asyncio
import os
import threading
import time
import uuid

import httpx
from cello import App, ThreadPoolConfig

app = App()
if os.environ.get("POOL_ALL"):
    app.set_threadpool(ThreadPoolConfig(size=16, offload_threshold_ms=0))
else:
    app.set_threadpool(ThreadPoolConfig(size=16, offload_threshold_ms=50))


@app.get("/sleep")
async def sleep(request):
    await asyncio.sleep(float(request.query.get("s", "1")))
    return {"slept": True}


@app.get("/eager")
async def eager(request):
    # Never suspends. It still runs inside a Task (anyio, asyncio.timeout need one).
    return {"task": asyncio.current_task() is not None, "loop": type(asyncio.get_running_loop()).__module__}


@app.get("/suspends")
async def suspends(request):
    await asyncio.sleep(0)
    return {"task": asyncio.current_task() is not None}


@app.get("/stats")
def stats(request):
    return app._executor.core.stats()


@app.get("/block", blocking=True)
def block(request):
    time.sleep(1)
    return {"thread": threading.current_thread().name}


@app.get("/sync")
def sync(request):
    time.sleep(float(request.query.get("s", "0")))
    return {"thread": threading.current_thread().name}


@app.get("/proxy")
async def proxy(request):
    # A real asyncio client library inside a handler.
    async with httpx.AsyncClient() as client:
        r = await client.get(request.query["url"])
    return {"status": r.status_code, "body": r.json()}


@app.get("/redis")
async def redis_roundtrip(request):
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379)
    try:
        key = f"cello-test:{uuid.uuid4()}:{request.query['k']}"
        await client.set(key, request.query["v"], ex=30)
        value = await client.get(key)
        await client.delete(key)
    finally:
        await client.aclose()
    return {"value": value.decode()}


@app.get("/cancellable")
async def cancellable(request):
    marker = request.query["marker"]
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        with open(marker, "w") as f:
            f.write("cancelled")
        raise
    return {"finished": True}


@app.get("/raise-after-await")
async def raise_after_await(request):
    await asyncio.sleep(0.01)
    raise ValueError("boom after await")


if __name__ == "__main__":
    app.run()
