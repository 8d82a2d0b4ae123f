"""JSON encoding of Python values: datetime family, UUID, Decimal, Enum, dataclass, pydantic,
non-str keys, nested containers."""

import collections
import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal

from cello import App, Response
from pydantic import BaseModel

app = App()

UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.Enum):
    HIGH = 3


class Flag(enum.IntEnum):
    ON = 1


@dataclasses.dataclass
class Address:
    city: str
    since: dt.date


@dataclasses.dataclass
class Person:
    name: str
    address: Address
    tags: list[str] = dataclasses.field(default_factory=list)


class Owner(BaseModel):
    id: uuid.UUID
    joined: dt.datetime
    score: float


class Pet(BaseModel):
    name: str
    owner: Owner
    nicknames: list[str] = []


def pet():
    return Pet(
        name="Rex",
        owner=Owner(id=UUID, joined=dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc), score=1.5),
        nicknames=["r"],
    )


@app.get("/temporal")
def temporal(request):
    return {
        "datetime": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        "datetime_utc": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "datetime_offset": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "date": dt.date(2024, 1, 2),
        "time": dt.time(3, 4, 5),
        "time_micro": dt.time(23, 59, 59, 999999),
    }


@app.get("/uuid")
def uuid_route(request):
    return {"id": UUID, "ids": [UUID]}


@app.get("/decimal")
def decimal_route(request):
    return {"price": Decimal("12.50"), "precise": Decimal("1234567890.123456789012345")}


@app.get("/enum")
def enum_route(request):
    return {"str_enum": Color.RED, "plain_enum": Level.HIGH, "int_enum": Flag.ON}


@app.get("/dataclass-nested")
def dataclass_nested(request):
    return {"person": Person("Ada", Address("London", dt.date(1815, 12, 10)), ["math"])}


@app.get("/pydantic-nested")
def pydantic_nested(request):
    return {"pet": pet(), "pets": [pet()]}


@app.get("/pydantic-list")
def pydantic_list(request):
    return [pet(), pet()]


@app.get("/keys")
def keys(request):
    return {"int_keys": {1: "a", 2: "b"}, "nested": {10: {20: True}}}


@app.get("/keys-scalar")
def keys_scalar(request):
    return {True: "t", False: "f", None: "n", 1.5: "float"}


@app.get("/bigint")
def bigint(request):
    return {"big": 2**70, "neg": -(2**70), "u64": 2**64 - 1}


@app.get("/containers")
def containers(request):
    return {"tuple": (1, 2, 3), "float": 0.1, "neg": -7, "big": 2**53, "unicode": "Grüße ✓ 中文", "ctrl": 'a"b\\c\n\t'}


@app.get("/json-response")
def json_response(request):
    return Response.json({"when": dt.date(2024, 1, 2), "id": UUID, "level": Level.HIGH})


Pair = collections.namedtuple("Pair", "left right")


@dataclasses.dataclass(slots=True, frozen=True)
class Slotted:
    a: int
    b: str


@app.get("/subclasses")
def subclasses(request):
    return {
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "default": collections.defaultdict(list, {"x": [1]}),
        "counter": collections.Counter("aab"),
        "pair": Pair(1, "r"),
        "slotted": Slotted(1, "s"),
    }


@app.get("/cycle")
def cycle(request):
    d = {}
    d["self"] = d
    return d


@app.get("/deep")
def deep(request):
    value = []
    for _ in range(100_000):
        value = [value]
    return value


@app.get("/large")
def large(request):
    return {"items": [{"i": i, "s": "x" * 10} for i in range(50_000)]}


@app.get("/unserializable")
def unserializable(request):
    return {"thing": object()}


@app.get("/ok")
def ok(request):
    return {"ok": True}


if __name__ == "__main__":
    app.run()
