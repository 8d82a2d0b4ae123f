"""Issue 2, item 6: the Rust JSON codec, in process (`cello._cello.dumps` / `loads`).

Plain JSON values must encode byte-for-byte like
`json.dumps(obj, separators=(",", ":"), ensure_ascii=False)`; checked on a fixed table and on
seeded random documents."""

import dataclasses
import datetime as dt
import enum
import json
import math
import random
import struct
import uuid
from collections import OrderedDict, namedtuple
from decimal import Decimal

import pytest
from cello._cello import JsonDecodeError, dumps, loads


def reference(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


TABLE = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    2**64,
    -(2**64) - 1,
    10**40,
    -(10**40),
    0.0,
    -0.0,
    0.1,
    1.0,
    -1.5,
    1e15,
    1e16,
    1e-4,
    1e-5,
    1.5e-7,
    123456789.123456789,
    1.7976931348623157e308,
    5e-324,
    2.2250738585072014e-308,
    "",
    "plain",
    'quote " backslash \\ slash /',
    "\n\r\t\b\f",
    "".join(chr(i) for i in range(0x20)),
    "\x7f \x80 \xa0 é ✓ 中文 😀 \u2028 \u2029 \ufeff",
    [],
    {},
    [[]],
    {"": {}},
    [1, "a", None, [True, {"k": [0.5]}]],
    {"a": 1, "b": [1, 2, {"c": None}], "d": {"e": "f"}},
    (1, 2, (3,)),
    {"tuple": (1, "x")},
]


@pytest.mark.parametrize("obj", TABLE, ids=repr)
def test_plain_values_match_json_dumps(obj):
    assert dumps(obj) == reference(obj)


def random_float(rng: random.Random) -> float:
    while True:
        kind = rng.random()
        if kind < 0.4:
            v = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        elif kind < 0.7:
            v = rng.uniform(-1e6, 1e6)
        else:
            v = round(rng.uniform(-1000, 1000), rng.randint(0, 6))
        if math.isfinite(v):
            return v


def random_str(rng: random.Random) -> str:
    alphabet = ["a", "Z", " ", '"', "\\", "/", "\n", "\x00", "\x1f", "\x7f", "é", "✓", "😀", "\u2028"]
    out = []
    for _ in range(rng.randint(0, 12)):
        if rng.random() < 0.5:
            out.append(rng.choice(alphabet))
        else:
            cp = rng.randint(0, 0x10FFFF)
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0x41
            out.append(chr(cp))
    return "".join(out)


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["none", "bool", "int", "bigint", "float", "str"]
    if depth < 4:
        kinds += ["list", "dict", "tuple"] * 2
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2**64), 2**64)
    if kind == "bigint":
        return rng.randint(-(10**30), 10**30)
    if kind == "float":
        return random_float(rng)
    if kind == "str":
        return random_str(rng)
    n = rng.randint(0, 5)
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(n)]
    if kind == "tuple":
        return tuple(random_value(rng, depth + 1) for _ in range(n))
    return {random_str(rng): random_value(rng, depth + 1) for _ in range(n)}


def test_random_documents_match_json_dumps():
    rng = random.Random(1234)
    for _ in range(3000):
        obj = random_value(rng)
        assert dumps(obj) == reference(obj), repr(obj)


def test_random_floats_match_repr():
    rng = random.Random(99)
    for _ in range(50_000):
        v = random_float(rng)
        assert dumps(v) == repr(v).encode(), repr(v)


def test_random_documents_round_trip_through_loads():
    rng = random.Random(4321)
    for _ in range(2000):
        obj = random_value(rng)
        text = reference(obj)
        assert loads(text) == json.loads(text), text
        assert loads(text.decode()) == json.loads(text)


def test_non_finite_floats_become_null():
    assert dumps([math.nan, math.inf, -math.inf]) == b"[null,null,null]"


def test_subclasses_of_builtins():
    class S(str):
        def __str__(self):
            return "wrong"

    class I(int):  # noqa: E742
        def __repr__(self):
            return "wrong"

    class F(float):
        pass

    Point = namedtuple("Point", "x y")
    obj = {"s": S("ok"), "i": I(7), "big": I(2**70), "f": F(0.5), "od": OrderedDict(a=1), "nt": Point(1, 2)}
    assert dumps(obj) == reference(obj)


def test_non_str_keys():
    class Color(enum.Enum):
        RED = "red"

    class Num(enum.IntEnum):
        ONE = 1

    obj = {2: "a", -2: "b", 2**70: "c", 1.5: "d", True: "e", False: "f", None: "g", Color.RED: "h", Num.ONE: "i"}
    assert obj[True] == "i"  # True == Num.ONE == 1: one key
    assert loads(dumps(obj)) == {
        "2": "a",
        "-2": "b",
        str(2**70): "c",
        "1.5": "d",
        "true": "i",
        "false": "f",
        "null": "g",
        "red": "h",
    }
    plain = {1: "a", 2.5: "b", False: "c", None: "d", float("nan"): 1, float("inf"): 2}
    assert dumps(plain) == reference(plain)
    u = uuid.UUID(int=1)
    assert loads(dumps({u: 1, dt.date(2024, 1, 2): 2, Decimal("1.5"): 3})) == {str(u): 1, "2024-01-02": 2, "1.5": 3}


@pytest.mark.parametrize("key", [object(), (1, 2), frozenset(), b"bytes"], ids=repr)
def test_unsupported_keys_raise_type_error(key):
    with pytest.raises(TypeError, match="keys must be"):
        dumps({key: 1})


def test_datetime_family_matches_isoformat():
    tz = dt.timezone
    values = [
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        dt.datetime(1, 1, 1),
        dt.datetime(2024, 1, 2, tzinfo=tz.utc),
        dt.datetime(2024, 1, 2, tzinfo=tz(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2024, 1, 2, tzinfo=tz(-dt.timedelta(hours=3, minutes=15))),
        dt.datetime(2024, 1, 2, tzinfo=tz(dt.timedelta(seconds=3661, microseconds=5))),
        dt.date(2024, 12, 31),
        dt.date(5, 1, 1),
        dt.time(0, 0),
        dt.time(23, 59, 59, 999999),
        dt.time(1, 2, 3, tzinfo=tz(dt.timedelta(hours=-1))),
    ]
    for v in values:
        assert dumps(v) == json.dumps(v.isoformat()).encode(), v


def test_zoneinfo_datetime():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no tz database")
    v = dt.datetime(2024, 7, 1, 12, tzinfo=paris)
    assert dumps(v) == f'"{v.isoformat()}"'.encode()


def test_uuid_decimal_enum():
    class Color(str, enum.Enum):
        RED = "red"

    class Level(enum.Enum):
        HIGH = 3
        NESTED = {"a": [1]}  # noqa: RUF012

    class Flag(enum.IntFlag):
        A = 1

    u = uuid.uuid4()
    assert dumps(u) == f'"{u}"'.encode()
    assert dumps([Decimal("12.50"), Decimal("1234567890.123456789012345"), Decimal("-1E+3")]) == (
        b'["12.50","1234567890.123456789012345","-1E+3"]'
    )
    assert dumps([Color.RED, Level.HIGH, Level.NESTED, Flag.A]) == b'["red",3,{"a":[1]},1]'


def test_sets_become_arrays():
    assert sorted(loads(dumps({1, 2, 3}))) == [1, 2, 3]
    assert loads(dumps(frozenset(["a"]))) == ["a"]


def test_dataclasses():
    @dataclasses.dataclass
    class Inner:
        when: dt.date
        ids: list

    @dataclasses.dataclass
    class Outer:
        name: str
        inner: Inner
        tags: tuple = ()
        secret: dataclasses.InitVar[int] = 0

        def __post_init__(self, secret):
            pass

    @dataclasses.dataclass(slots=True, frozen=True)
    class Slotted:
        a: int

    obj = Outer("x", Inner(dt.date(2024, 1, 2), [uuid.UUID(int=0)]), ("t",))
    assert loads(dumps(obj)) == {
        "name": "x",
        "inner": {"when": "2024-01-02", "ids": ["00000000-0000-0000-0000-000000000000"]},
        "tags": ["t"],
    }
    assert dumps([Slotted(1), Slotted(2)]) == b'[{"a":1},{"a":2}]'
    with pytest.raises(TypeError):
        dumps(Outer)  # a dataclass type is not an instance


def test_pydantic_models():
    pydantic = pytest.importorskip("pydantic")

    class Owner(pydantic.BaseModel):
        id: uuid.UUID
        joined: dt.datetime
        score: float

    class Pet(pydantic.BaseModel):
        name: str
        owner: Owner

    pet = Pet(name="Rex", owner=Owner(id=uuid.UUID(int=1), joined=dt.datetime(2024, 5, 6), score=1.5))
    expected = json.loads(pet.model_dump_json())
    assert loads(dumps(pet)) == expected
    assert loads(dumps({"pets": [pet, pet]})) == {"pets": [expected, expected]}


@pytest.mark.parametrize("value", [b"x", bytearray(b"x"), object(), 1j, dt.timedelta(1)], ids=repr)
def test_unserializable_raises_type_error(value):
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"v": [value]})


def test_nesting_limit_and_cycles():
    # The writer's limit is the reader's (512 levels): whatever `loads` accepted can be echoed.
    deep = []
    for _ in range(511):
        deep = [deep]
    assert dumps(deep) == b"[" * 512 + b"]" * 512
    with pytest.raises(ValueError, match="nesting too deep"):
        dumps([deep])
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="nesting too deep"):
        dumps(cyclic)


def test_lone_surrogate_is_an_error():
    with pytest.raises(ValueError):
        dumps({"s": "\ud800"})


def test_dict_mutated_during_serialization_raises():
    class Evil(enum.Enum):
        A = 1

        @property
        def value(self):  # a misbehaving callback
            target.pop("z", None)
            return 1

    target = {"a": Evil.A, "z": 2}
    with pytest.raises(RuntimeError, match="changed size"):
        dumps(target)


# --- loads ---------------------------------------------------------------------------------------


def test_loads_types_and_order():
    data = loads(b'{"z": 1, "a": [true, false, null, 1.5, -2, "\\u00e9\\ud83d\\ude00"], "m": {}}')
    assert data == {"z": 1, "a": [True, False, None, 1.5, -2, "é😀"], "m": {}}
    assert list(data) == ["z", "a", "m"]
    assert loads(b'{"a": 1, "a": 2}') == {"a": 2}
    assert loads(b"\xef\xbb\xbf[1]") == [1]
    assert loads(bytearray(b"[1]")) == [1] and loads(memoryview(b"[2]")) == [2]


def test_loads_numbers_like_json_loads():
    # 1e400 (an infinite float) is refused on purpose: see test_non_finite_numbers_are_refused.
    text = "[0, -0, 18446744073709551615, -9223372036854775808, 123456789012345678901234567890, 1e-400, 0.1]"
    assert loads(text) == json.loads(text)
    assert loads("[-0.0]")[0] == 0.0 and math.copysign(1, loads("[-0.0]")[0]) == -1


@pytest.mark.parametrize(
    ("doc", "line", "col"),
    [
        (b'{\n  "a": 1,\n  "b": }\n', 3, 8),
        (b"{not json", 1, 2),
        (b'{"a": [1, 2', 1, 11),
        (b"[1, 2,]", 1, 7),
        (b'{"a":1}}', 1, 8),
        (b'["\xc3\xa9", x]', 1, 7),
        (b"[1, 2] [3]", 1, 8),
        (b'{"a": 123456789012345678901234567890 x}', 1, 38),
        (b"", 1, 1),
        (b" \n ", 2, 2),
    ],
)
def test_malformed_json_reports_line_and_column(doc, line, col):
    with pytest.raises(JsonDecodeError) as info:
        loads(doc)
    err = info.value
    assert isinstance(err, ValueError)
    assert f"line {line}, column {col}" in str(err), str(err)
    assert (err.lineno, err.colno) == (line, col)


def test_loads_rejects_invalid_utf8_and_wrong_types():
    with pytest.raises(JsonDecodeError):
        loads(b'"\xff"')
    with pytest.raises(TypeError):
        loads(123)


def test_loads_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(JsonDecodeError):
        loads(b"[" * 100_000 + b"]" * 100_000)


def test_reader_and_writer_agree_on_depth():
    doc = b"[" * 512 + b"]" * 512
    assert dumps(loads(doc)) == doc
    for too_deep in (b"[" * 513 + b"]" * 513, b'{"a":' * 513 + b"1" + b"}" * 513, b"[" * 100_000):
        with pytest.raises(JsonDecodeError, match="nesting too deep"):
            loads(too_deep)
    # Also on the fallback path taken for numbers simd-json cannot hold.
    with pytest.raises(JsonDecodeError, match="nesting too deep"):
        loads(b"[" * 600 + b"123456789012345678901234567890" + b"]" * 600)


@pytest.mark.parametrize(
    "doc", ["1e999999", "-1e999999", "[1e400]", '{"x": -1E+9999}', "[123456789012345678901234567890, 1e999]",
            "[123456789012345678901234567890, NaN]", "[123456789012345678901234567890, -Infinity]", "NaN"]
)  # fmt: skip
def test_non_finite_numbers_are_refused(doc):
    with pytest.raises(JsonDecodeError):
        loads(doc)


def test_big_numbers_still_parse():
    assert loads("[123456789012345678901234567890, 1.5, 1e-999999]") == [123456789012345678901234567890, 1.5, 0.0]
