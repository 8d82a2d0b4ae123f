"""App for the worker/supervisor/CLI tests: reports its pid, sleeps, crashes on demand.

Environment knobs: CELLO_TEST_FAIL_STARTUP=1 makes the startup hook raise;
CELLO_TEST_HOOK_FILE gets a line per startup/shutdown hook run (with the pid).
"""

import os
import time

from cello import App

app = App()


def record(event):
    path = os.environ.get("CELLO_TEST_HOOK_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {os.getpid()}\n")


@app.on_event("startup")
def startup():
    if os.environ.get("CELLO_TEST_FAIL_STARTUP"):
        raise RuntimeError("database unreachable (test)")
    record("startup")


@app.on_event("shutdown")
def shutdown():
    record("shutdown")


def admin_only(request):
    return True


@app.get("/pid")
def pid(request):
    return {"pid": os.getpid()}


@app.get("/slow", blocking=True)
def slow(request):
    time.sleep(float(request.query.get("s", "2")))
    return {"pid": os.getpid(), "slept": True}


@app.get("/crash")
def crash(request):
    os._exit(1)


@app.get("/ip")
def ip(request):
    return {"client_ip": request.client_ip()}


@app.get("/boom")
def boom(request):
    raise ValueError("boom (test)")


@app.post("/items/{item_id}", guards=[admin_only])
def update_item(request, item_id: int):
    return {"id": item_id}


if __name__ == "__main__":
    app.run()
