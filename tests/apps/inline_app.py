"""Sync handlers on the I/O thread (`CELLO_INLINE`): each route says which thread ran it
(`loop`: the event loop's, the worker's main thread; `pool`: the thread pool adaptive offload
moves slow handlers to; `io`: an I/O thread)."""

import asyncio
import threading
import time

from cello import App, HTTPException

app = App()


def where() -> str:
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return "loop"
    return "pool" if thread.name.startswith("cello-pool") else "io"


@app.get("/fast")
def fast(request):
    return {"thread": where()}


@app.get("/sometimes")
def sometimes(request):
    """Fast unless asked to sleep (`?ms=N`) or to fail (`?fail=1`: 418)."""
    ms = int(request.query.get("ms", "0"))
    if ms:
        time.sleep(ms / 1000)
    if request.query.get("fail"):
        raise HTTPException(418, f"teapot on the {where()} thread")
    return {"thread": where()}


@app.get("/slow")
def slow(request):
    time.sleep(0.003)
    return {"thread": where()}


@app.get("/lines")
def lines(request):
    """A sync handler whose result must be pumped on the loop (an iterator)."""
    thread = where()
    return iter([f"{thread}\n", "two\n", "three\n"])


async def later(thread: str) -> dict:
    await asyncio.sleep(0)
    return {"thread": thread, "awaited": True}


@app.get("/returns-coroutine")
def returns_coroutine(request):
    """A plain ``def`` that returns a coroutine: it is awaited on the loop."""
    return later(where())


@app.post("/echo")
def echo(request):
    return {"thread": where(), "n": len(request.body())}


@app.get("/async")
async def async_route(request):
    return {"thread": where()}


if __name__ == "__main__":
    app.run()
