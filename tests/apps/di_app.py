"""Dependency injection, typed parameters and background tasks, served for the black-box tests.

Side effects (teardowns, background tasks) are recorded in EVENTS and readable at /events, so a
test over a real socket can see what ran after its response.
"""

import asyncio
import dataclasses
import enum
import threading
import time
import uuid
from typing import Annotated, Optional

from cello import (
    App,
    BackgroundTasks,
    Body,
    Cookie,
    Depends,
    File,
    Form,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
)
from pydantic import BaseModel, Field

app = App()
EVENTS: list[str] = []
_lock = threading.Lock()


def record(event: str) -> None:
    with _lock:
        EVENTS.append(event)
    print(f"event {event}", flush=True)


class Color(str, enum.Enum):
    red = "red"
    green = "green"


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int


# ---- typed parameters --------------------------------------------------------------------


@app.get("/items/{item_id}")
def get_item(item_id: int, q: Optional[str] = None, limit: int = 10):  # noqa: UP045 - Optional on purpose
    return {"item_id": item_id, "q": q, "limit": limit}


@app.get("/floats/{x}")
def get_float(x: float):
    return {"x": x}


@app.get("/uuids/{u}")
def get_uuid(u: uuid.UUID):
    return {"u": str(u), "version": u.version}


@app.get("/colors/{color}")
def get_color(color: Color):
    return {"color": color.value, "is_enum": isinstance(color, Color)}


@app.get("/search")
def search(
    ids: list[int] = Query(default=[]),
    limit: int = Query(10, ge=1, le=100),
    name: str | None = Query(None, min_length=2, max_length=5, pattern="^[a-z]+$"),
    flag: bool = False,
    page: Annotated[int, Query(alias="p", gt=0)] = 1,
):
    return {"ids": ids, "limit": limit, "name": name, "flag": flag, "page": page}


@app.get("/required")
def required(n: int):
    return {"n": n}


@app.get("/headers")
def headers(x_user: str = Header(), x_count: int = Header(0), session: str | None = Cookie(None)):
    return {"x_user": x_user, "x_count": x_count, "session": session}


@app.post("/items")
def create_item(item: Item):
    return {"name": item.name, "price": item.price, "tags": item.tags}


@app.post("/points")
def create_point(p: Point):
    return {"x": p.x, "y": p.y, "is_point": isinstance(p, Point)}


@app.post("/embed")
def embed(item: Item, count: int = Body(embed=True)):
    return {"item": item.name, "count": count}


@app.post("/form")
def form(name: str = Form(), age: int = Form(ge=0)):
    return {"name": name, "age": age}


@app.post("/upload")
def upload(file=File(), note: str = Form("")):
    return {"filename": file.filename, "size": file.size(), "note": note}


@app.get("/paths/{slug}")
def path_marker(slug: str = Path(min_length=3)):
    return {"slug": slug}


@app.get("/by-type/{name}")
def by_type(r: Request, name: str):
    return {"path": r.path, "name": name}


@app.get("/legacy/{id}")
def legacy(req):
    return {"id": req.params["id"], "q": req.query.get("q")}


# ---- dependencies -------------------------------------------------------------------------


class Db:
    def __init__(self, name: str) -> None:
        self.name = name


app.register_singleton("db", Db("primary"))

CALLS = {"settings": 0}


def settings():
    CALLS["settings"] += 1
    return {"mode": "test", "call": CALLS["settings"]}


def token(x_token: str = Header()):
    if x_token != "secret":
        raise HTTPException(401, "bad token")
    return x_token


def current_user(tok: str = Depends(token), cfg: dict = Depends(settings)):
    return {"name": "alice", "token": tok, "mode": cfg["mode"]}


def session_gen():
    record("session:open")
    try:
        yield "session"
    except Exception as e:  # noqa: BLE001 - the handler's error is thrown in here
        record(f"session:error:{type(e).__name__}")
        raise
    finally:
        record("session:close")


async def async_resource():
    await asyncio.sleep(0)
    record("aresource:open")
    yield "aresource"
    await asyncio.sleep(0.05)
    record("aresource:close")


async def async_value(limit: int = 5):
    await asyncio.sleep(0)
    return limit * 2


@app.get("/deps/user")
def deps_user(user: dict = Depends(current_user), cfg: dict = Depends(settings)):
    # settings is used twice (directly and through current_user): called once per request.
    return {"user": user, "settings_call": cfg["call"]}


@app.get("/deps/singleton")
def deps_singleton(db: Db = Depends("db")):
    return {"db": db.name}


@app.get("/deps/gen")
def deps_gen(s: str = Depends(session_gen)):
    record("handler:gen")
    return {"s": s}


@app.get("/deps/gen-fail")
def deps_gen_fail(s: str = Depends(session_gen)):
    record("handler:gen-fail")
    raise RuntimeError("boom")


@app.get("/deps/async")
async def deps_async(r: str = Depends(async_resource), v: int = Depends(async_value)):
    return {"r": r, "v": v}


@app.get("/deps/annotated")
def deps_annotated(v: Annotated[int, Depends(async_value)]):
    return {"v": v}


@app.get("/deps/guarded", guards=[Depends(token)])
def deps_guarded():
    return {"ok": True}


def denies():
    return False


@app.get("/deps/denied", guards=[Depends(denies)])
def deps_denied():
    return {"ok": True}


@app.get("/deps/slow-teardown")
def slow_teardown(s: str = Depends(session_gen), tasks: BackgroundTasks = None):
    return {"s": s}


# ---- background tasks ---------------------------------------------------------------------


def sync_task(label: str, delay: float = 0.0) -> None:
    time.sleep(delay)
    record(f"task:{label}:{threading.current_thread().name.split('_')[0]}")


async def async_task(label: str) -> None:
    await asyncio.sleep(0.01)
    record(f"atask:{label}")


def failing_task() -> None:
    raise ValueError("task failed on purpose")


@app.post("/tasks")
def tasks(background: BackgroundTasks, label: str = "x"):
    background.add_task(sync_task, label, delay=0.2)
    background.add_task(async_task, label)
    background.add_task(failing_task)
    background.add_task(sync_task, label + "-after")
    return {"queued": len(background)}


@app.post("/tasks/async")
async def tasks_async(background: BackgroundTasks):
    await asyncio.sleep(0.01)
    background.add_task(async_task, "from-async")
    return {"queued": 1}


@app.post("/tasks/blocking", blocking=True)
def tasks_blocking(background: BackgroundTasks):
    background.add_task(sync_task, "from-pool")
    return {"queued": 1}


@app.post("/tasks/slow")
def tasks_slow(background: BackgroundTasks):
    background.add_task(sync_task, "slow", delay=1.0)
    return {"queued": 1}


@app.get("/events")
def events():
    with _lock:
        return list(EVENTS)


@app.delete("/events")
def clear_events():
    with _lock:
        EVENTS.clear()
    return {"cleared": True}


if __name__ == "__main__":
    app.run()
