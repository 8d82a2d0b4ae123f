"""Lifespan, on_event, app.state and url_for, served for the black-box tests."""

import contextlib

from cello import App

EVENTS: list[str] = []


def record(event: str) -> None:
    EVENTS.append(event)
    print(f"event {event}", flush=True)


@contextlib.asynccontextmanager
async def lifespan(app):
    record("lifespan:enter")
    app.state.db = {"connected": True}
    yield {"pool": "ready"}
    record("lifespan:exit")


app = App(lifespan=lifespan)


@app.on_event("startup")
async def startup():
    record("startup")
    app.state.started = True


@app.on_event("shutdown")
def shutdown():
    record("shutdown")


@app.get("/state")
def state():
    return {"db": app.state.db, "pool": app.state.pool, "started": app.state.started, "events": EVENTS}


@app.get("/users/{user_id:int}", name="user_detail")
def user(user_id: int):
    return {"id": user_id}


@app.get("/files/{rest:path}")
def files(rest: str):
    return {"rest": rest}


@app.get("/links")
def links():
    return {
        "user": app.url_for("user_detail", user_id=7),
        "files": app.url_for("files", rest="a b/c.txt", v=2),
        "state": app.url_for("state"),
    }


@app.get("/boom")
def boom():
    raise KeyError("missing")


if __name__ == "__main__":
    app.run()
