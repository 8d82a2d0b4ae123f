"""Server-Sent Events: `python examples/sse/app.py`, then `curl -N http://127.0.0.1:8000/ticks`
(add `-H 'Last-Event-ID: 41'` to resume)."""

import asyncio

from cello import App, Response, SseEvent

app = App()


@app.get("/ticks")
async def ticks(request):
    start = int(request.last_event_id or -1) + 1

    async def gen():
        for i in range(start, start + 100):
            await asyncio.sleep(1)
            yield SseEvent({"i": i}, event="tick", id=str(i))

    return Response.sse(gen(), heartbeat=15)


if __name__ == "__main__":
    app.run()
