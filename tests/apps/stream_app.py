"""Endless streaming responses for tests/integration/test_stream_backpressure.py."""

import threading

from cello import App

app = App()
produced = {"async": 0, "sync": 0}
lock = threading.Lock()


@app.get("/produced")
def get_produced(request):
    with lock:
        return dict(produced)


@app.get("/endless")
async def endless(request):
    chunk = b"z" * 65536

    async def gen():
        while True:
            with lock:
                produced["async"] += 1
            yield chunk

    return gen()


@app.get("/endless-sync")
def endless_sync(request):
    chunk = b"s" * 65536

    def gen():
        while True:
            with lock:
                produced["sync"] += 1
            yield chunk

    return gen()


if __name__ == "__main__":
    app.run()
