"""Handler return conventions of API.md: each route returns one kind of value."""

import asyncio
import dataclasses
import time
from http import HTTPStatus

from cello import App, Response
from pydantic import BaseModel

app = App()

SLOW_GAP = 1.5  # seconds between the first and the last chunk of the slow streams


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = "origin"


@app.get("/dict")
def ret_dict(request):
    return {"a": 1, "b": [True, None, "x"]}


@app.get("/list")
def ret_list(request):
    return [1, "two", 3.5, None]


@app.get("/int")
def ret_int(request):
    return 42


@app.get("/float")
def ret_float(request):
    return 2.5


@app.get("/bool")
def ret_bool(request):
    return True


@app.get("/none")
def ret_none(request):
    return None


@app.get("/str")
def ret_str(request):
    return 'hello "world"'


@app.get("/bytes")
def ret_bytes(request):
    return b"\x00\x01\xffraw"


@app.get("/tuple2")
def ret_tuple2(request):
    return {"created": True}, 201


@app.get("/tuple3")
def ret_tuple3(request):
    return {"accepted": True}, 202, {"X-Custom": "yes", "X-Other": "2"}


@app.get("/tuple-str")
def ret_tuple_str(request):
    return "teapot", 418


@app.get("/tuple-httpstatus")
def ret_tuple_httpstatus(request):
    return {"created": True}, HTTPStatus.CREATED


@app.get("/gen-empty")
def ret_gen_empty(request):
    def chunks():
        return
        yield ""

    return chunks()


@app.get("/response")
def ret_response(request):
    return Response("plain body", status=203, headers={"X-From": "response"}, content_type="text/plain")


@app.get("/pydantic")
def ret_pydantic(request):
    return Item(name="cello", price=9.5, tags=["a", "b"])


@app.get("/dataclass")
def ret_dataclass(request):
    return Point(1, 2)


@app.get("/async-dict")
async def ret_async_dict(request):
    await asyncio.sleep(0.01)
    return {"async": True}


@app.get("/async-tuple")
async def ret_async_tuple(request):
    return {"async": True}, 201, {"X-Async": "1"}


@app.get("/gen")
def ret_gen(request):
    def chunks():
        yield "alpha,"
        yield b"beta,"
        yield "gamma"

    return chunks()


@app.get("/gen-direct")
def ret_gen_direct(request):
    yield "one,"
    yield "two"


@app.get("/agen")
async def ret_agen(request):
    async def chunks():
        for word in ("alpha,", "beta,", "gamma"):
            await asyncio.sleep(0)
            yield word

    return chunks()


@app.get("/gen-slow")
def ret_gen_slow(request):
    def chunks():
        yield "first\n"
        time.sleep(SLOW_GAP)
        yield "last\n"

    return chunks()


@app.get("/agen-slow")
async def ret_agen_slow(request):
    async def chunks():
        yield "first\n"
        await asyncio.sleep(SLOW_GAP)
        yield "last\n"

    return chunks()


STREAM_STATE = {"sync": "idle", "async": "idle"}


@app.get("/gen-forever")
def gen_forever(request):
    def chunks():
        STREAM_STATE["sync"] = "running"
        try:
            while True:
                yield "tick\n"
                time.sleep(0.05)
        finally:
            STREAM_STATE["sync"] = "closed"

    return chunks()


@app.get("/agen-forever")
async def agen_forever(request):
    async def chunks():
        STREAM_STATE["async"] = "running"
        try:
            while True:
                yield "tick\n"
                await asyncio.sleep(0.05)
        finally:
            STREAM_STATE["async"] = "closed"

    return chunks()


@app.get("/stream-state")
def stream_state(request):
    return dict(STREAM_STATE)


@app.get("/iterator")
def ret_iterator(request):
    return iter([b"a", b"b", b"c"])


@app.get("/stream")
def ret_stream(request):
    return Response.stream(iter(["x", "y", "z"]), content_type="text/csv")


if __name__ == "__main__":
    app.run()
