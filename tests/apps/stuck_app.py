"""A handler that never returns (`/sleep`: `time.sleep(1000)` on the Python thread), for
issue 9 item 2: liveness, the supervisor's heartbeat check, SIGTERM/SIGINT, the bounded
hand-off queue, and readiness checks slower than the header timeout.

Small timeouts: handler 1 s, request head 1 s, readiness checks 2 s. `STUCK_QUEUE` sets
`limits.max_queued_requests` (default 8)."""

import asyncio
import os
import time

from cello import App, HealthCheckConfig, LimitsConfig, TimeoutConfig

app = App()
app.set_timeouts(TimeoutConfig(handler=1, read_header=1))
app.set_limits(LimitsConfig(max_queued_requests=int(os.environ.get("STUCK_QUEUE", "8"))))
app.enable_health_checks(HealthCheckConfig(timeout_secs=2, cache_secs=0))
SLOW_CHECK = {"on": False}


@app.health_check("slow")
async def slow_check():
    if SLOW_CHECK["on"]:
        await asyncio.sleep(30)
    return True


@app.post("/slow-check/{on:int}")
def toggle_slow_check(request):
    SLOW_CHECK["on"] = bool(request.params["on"])
    return {"slow": SLOW_CHECK["on"]}


@app.get("/sleep")
def sleep(request):
    time.sleep(1000)
    return {"woke": True}


@app.get("/fast")
def fast(request):
    return {"ok": True, "pid": os.getpid()}


@app.post("/upload")
def upload(request):
    return {"size": len(request.body)}


if __name__ == "__main__":
    app.run()
