"""WebSocket routes for tests/integration/test_websocket.py.

Env: WS_MAX_MESSAGE (bytes), WS_PING / WS_IDLE (seconds), WS_QUEUE (messages),
WS_MAX_CONNECTIONS, WS_DEFLATE (1: permessage-deflate on)."""

import asyncio
import os
import threading

from cello import App, Depends, LimitsConfig, WebSocket, WebSocketConfig
from cello.guards import Authenticated

app = App()
app.set_websocket(
    WebSocketConfig(
        max_message_size=int(os.environ.get("WS_MAX_MESSAGE", "65536")),
        ping_interval=float(os.environ.get("WS_PING", "20")),
        idle_timeout=float(os.environ.get("WS_IDLE", "60")),
        queue_size=int(os.environ.get("WS_QUEUE", "16")),
        per_message_deflate=os.environ.get("WS_DEFLATE") == "1",
    )
)
if os.environ.get("WS_MAX_CONNECTIONS"):
    app.set_limits(LimitsConfig(max_connections=int(os.environ["WS_MAX_CONNECTIONS"])))

# Handler events the tests read back over HTTP (cancellations, finished sync handlers).
events: list[str] = []
lock = threading.Lock()


def note(event: str) -> None:
    with lock:
        events.append(event)


@app.get("/events")
def get_events(request):
    with lock:
        return list(events)


@app.websocket("/echo")
async def echo(ws: WebSocket):
    await ws.accept()
    async for msg in ws:
        if msg.is_text():
            await ws.send_text(msg.text)
        else:
            await ws.send_binary(msg.data)


@app.websocket("/json")
async def json_echo(ws):
    await ws.accept()
    while True:
        data = await ws.receive_json()
        await ws.send_json({"got": data})


@app.websocket("/rooms/{room:int}")
async def room(ws, room: int, name: str = "anon"):
    await ws.accept()
    await ws.send_json({"room": room, "name": name, "type": type(room).__name__})
    await ws.close(4000, "bye")


def current_user():
    return {"name": "ada"}


@app.websocket("/dep")
async def with_dependency(ws, user=Depends(current_user)):
    await ws.accept()
    await ws.send_text(user["name"])
    await ws.close()


def set_user(request):
    # The test guard reads a header the way an auth layer would fill request.context.
    if request.headers.get("x-user"):
        request.context["user"] = {"name": request.headers["x-user"]}
    return True


@app.websocket("/guarded", guards=[set_user, Authenticated()])
async def guarded(ws):
    await ws.accept()
    await ws.send_text("welcome " + ws.context["user"]["name"])
    await ws.close()


@app.websocket("/proto")
async def proto(ws):
    chosen = next((p for p in ("v2.chat", "v1.chat") if p in ws.subprotocols), None)
    await ws.accept(subprotocol=chosen)
    await ws.send_text(str(chosen))
    await ws.close()


@app.websocket("/refuse")
async def refuse(ws):
    return None  # never accepts: the handshake is refused with 403


@app.websocket("/boom")
async def boom(ws):
    await ws.accept()
    await ws.receive_text()
    raise RuntimeError("handler failed")


@app.websocket("/sync")
def sync_echo(ws):
    # The published sync style: recv() is None once the client closed.
    note(f"sync-thread-is-main:{threading.current_thread() is threading.main_thread()}")
    while True:
        msg = ws.recv()
        if msg is None:
            note("sync-closed")
            return
        ws.send_text(f"sync:{msg}")


@app.websocket("/sleeper")
async def sleeper(ws):
    await ws.accept()
    await ws.send_text("ready")
    try:
        await asyncio.sleep(3600)  # never reads: only a cancellation ends this
    except asyncio.CancelledError:
        note("sleeper-cancelled")
        raise


@app.websocket("/flood")
async def flood(ws):
    # Sends as fast as the connection lets it; with a client that never reads, send() must
    # wait (bounded queue) instead of buffering without limit.
    await ws.accept()
    chunk = "x" * 65536
    sent = 0
    try:
        while True:
            await ws.send_text(chunk)
            sent += 1
            if sent % 64 == 0:
                note(f"flood:{sent}")
    except BaseException:  # the client went away: a send error, or the task cancelled
        note(f"flood-ended:{sent}")
        raise


@app.websocket("/slow-reader")
async def slow_reader(ws):
    # Reads one message per second: a fast client is pushed back on by TCP.
    await ws.accept()
    n = 0
    async for _ in ws:
        n += 1
        await asyncio.sleep(1)
    note(f"slow-reader:{n}")


if __name__ == "__main__":
    app.run()
