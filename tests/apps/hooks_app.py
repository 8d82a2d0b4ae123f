"""Startup/shutdown hooks, sync and async; each appends a line to $CELLO_TEST_HOOK_FILE."""

import asyncio
import os

from cello import App

app = App()
HOOK_FILE = os.environ["CELLO_TEST_HOOK_FILE"]


def record(event):
    with open(HOOK_FILE, "a") as f:
        f.write(event + "\n")


@app.on_event("startup")
def startup_sync():
    record("startup-sync")


@app.on_event("startup")
async def startup_async():
    await asyncio.sleep(0.01)
    record("startup-async")


@app.on_event("shutdown")
def shutdown_sync():
    record("shutdown-sync")


@app.on_event("shutdown")
async def shutdown_async():
    await asyncio.sleep(0.01)
    record("shutdown-async")


@app.get("/events")
def events(request):
    with open(HOOK_FILE) as f:
        return {"events": f.read().split()}


if __name__ == "__main__":
    app.run()
