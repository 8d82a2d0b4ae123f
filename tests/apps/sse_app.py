"""Server-Sent Events routes for tests/integration/test_sse.py."""

import asyncio
import threading

from cello import App, Response, SseEvent

app = App()
events: list[str] = []
lock = threading.Lock()


def note(event: str) -> None:
    with lock:
        events.append(event)


@app.get("/events")
def get_events(request):
    with lock:
        return list(events)


@app.get("/count")
async def count(request):
    n = int(request.query.get("n", "3"))

    async def gen():
        for i in range(n):
            yield SseEvent({"i": i}, event="tick", id=str(i))

    return Response.sse(gen())


@app.get("/sync")
def sync_events(request):
    return Response.sse([SseEvent("a"), {"data": "b", "id": "2"}, "c\nd"])


@app.get("/resume")
async def resume(request):
    # A reconnecting EventSource sends the last id it saw.
    start = int(request.last_event_id or request.headers.get("last-event-id") or -1) + 1

    async def gen():
        for i in range(start, start + 3):
            yield SseEvent(str(i), id=str(i))

    return Response.sse(gen())


@app.get("/quiet")
async def quiet(request):
    async def gen():
        await asyncio.sleep(1.0)
        yield SseEvent("late")

    return Response.sse(gen(), heartbeat=float(request.query.get("hb", "0.2")))


@app.get("/forever")
async def forever(request):
    tag = request.query.get("tag", "x")

    async def gen():
        try:
            yield SseEvent("first")
            await asyncio.Event().wait()  # nothing more, ever: only the client leaving ends it
            yield SseEvent("never")
        finally:
            note(f"closed:{tag}")

    return Response.sse(gen(), heartbeat=None)


if __name__ == "__main__":
    app.run()
