"""Cost of Python middleware (docs/middleware.md): µs per request of a sync route through the
real Rust pipeline (in-process TestClient), with no middleware, one sync and one async
middleware. Run: .venv/bin/python bench/middleware_cost.py [requests]"""

from __future__ import annotations

import sys
import time

from cello import App
from cello.testing import TestClient


def build(kind: str) -> App:
    app = App()

    @app.get("/")
    def index(request):
        return {"ok": True}

    if kind == "sync":

        @app.use
        def passthrough(request, call_next):
            return call_next(request)

    elif kind == "async":

        @app.use
        async def passthrough_async(request, call_next):
            return await call_next(request)

    return app


def measure(kind: str, n: int) -> float:
    with TestClient(build(kind)) as client:
        for _ in range(500):
            client.get("/")
        start = time.perf_counter()
        for _ in range(n):
            client.get("/")
        return (time.perf_counter() - start) / n * 1e6


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for kind in ("none", "sync", "async"):
        print(f"{kind:5s} {measure(kind, n):8.1f} us/request")
