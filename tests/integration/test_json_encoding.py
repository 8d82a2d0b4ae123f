"""Issue 2, item 6: JSON written from Python objects: datetime, date, time (ISO 8601), UUID
(string), Decimal, Enum (its value), dataclasses, pydantic models, non-str dict keys.

Decimal: API.md/DESIGN.md only say "supported, as users expect". We accept a JSON string or a
JSON number, but the exact decimal value must survive (no float rounding)."""

import datetime as dt
import json
from decimal import Decimal

import httpx
import pytest
from rawhttp import assert_problem

pytestmark = pytest.mark.timeout(30)

UUID = "12345678-1234-5678-1234-567812345678"


@pytest.fixture(scope="module")
def server(serve):
    return serve("json_app")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def get_json(client, path):
    resp = client.get(path)
    assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:1000]}"
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    return resp.json()


def parse_dt(value: str) -> dt.datetime:
    assert isinstance(value, str), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_naive_datetime_is_iso8601(client):
    got = get_json(client, "/temporal")
    assert got["datetime"] == "2024-01-02T03:04:05.123456"


def test_aware_datetimes_keep_their_offset(client):
    got = get_json(client, "/temporal")
    assert parse_dt(got["datetime_utc"]) == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert got["datetime_utc"] in ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05Z")
    offset = parse_dt(got["datetime_offset"])
    assert offset.utcoffset() == dt.timedelta(hours=2)
    assert got["datetime_offset"] == "2024-01-02T03:04:05+02:00"


def test_date_and_time_are_iso8601(client):
    got = get_json(client, "/temporal")
    assert got["date"] == "2024-01-02"
    assert got["time"] == "03:04:05"
    assert got["time_micro"] == "23:59:59.999999"


def test_uuid_is_a_string(client):
    assert get_json(client, "/uuid") == {"id": UUID, "ids": [UUID]}


def test_decimal_keeps_its_exact_value(client):
    resp = client.get("/decimal")
    assert resp.status_code == 200, resp.text
    got = json.loads(resp.content, parse_float=Decimal)
    assert isinstance(got["price"], str | Decimal), got
    assert Decimal(str(got["price"])) == Decimal("12.50")
    assert Decimal(str(got["precise"])) == Decimal("1234567890.123456789012345"), "Decimal lost precision"


def test_enum_is_its_value(client):
    assert get_json(client, "/enum") == {"str_enum": "red", "plain_enum": 3, "int_enum": 1}


def test_nested_dataclass(client):
    assert get_json(client, "/dataclass-nested") == {
        "person": {"name": "Ada", "address": {"city": "London", "since": "1815-12-10"}, "tags": ["math"]}
    }


PET = {
    "name": "Rex",
    "owner": {"id": UUID, "joined": "2024-05-06T07:08:09Z", "score": 1.5},
    "nicknames": ["r"],
}


def normalise_pet(pet):
    pet = json.loads(json.dumps(pet))
    pet["owner"]["joined"] = parse_dt(pet["owner"]["joined"])
    return pet


def test_pydantic_models_nested_in_containers(client):
    got = get_json(client, "/pydantic-nested")
    assert normalise_pet(got["pet"]) == normalise_pet(PET)
    assert [normalise_pet(p) for p in got["pets"]] == [normalise_pet(PET)]


def test_list_of_pydantic_models(client):
    got = get_json(client, "/pydantic-list")
    assert [normalise_pet(p) for p in got] == [normalise_pet(PET)] * 2


def test_non_str_keys_become_strings(client):
    assert get_json(client, "/keys") == {"int_keys": {"1": "a", "2": "b"}, "nested": {"10": {"20": True}}}


def test_containers_numbers_and_strings(client):
    got = get_json(client, "/containers")
    assert got == {
        "tuple": [1, 2, 3],
        "float": 0.1,
        "neg": -7,
        "big": 2**53,
        "unicode": "Grüße ✓ 中文",
        "ctrl": 'a"b\\c\n\t',
    }


def test_response_json_uses_the_same_encoder(client):
    assert get_json(client, "/json-response") == {"when": "2024-01-02", "id": UUID, "level": 3}


def test_unserializable_value_is_500_problem_and_server_survives(client):
    assert_problem(client.get("/unserializable"), 500)
    assert get_json(client, "/ok") == {"ok": True}


def test_scalar_keys_like_json_dumps(client):
    assert get_json(client, "/keys-scalar") == {"true": "t", "false": "f", "null": "n", "1.5": "float"}


def test_big_integers_are_exact(client):
    resp = client.get("/bigint")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"big": 2**70, "neg": -(2**70), "u64": 2**64 - 1}


def test_container_subclasses_namedtuples_and_slotted_dataclasses(client):
    assert get_json(client, "/subclasses") == {
        "ordered": {"b": 1, "a": 2},
        "default": {"x": [1]},
        "counter": {"a": 2, "b": 1},
        "pair": [1, "r"],
        "slotted": {"a": 1, "b": "s"},
    }


@pytest.mark.parametrize("path", ["/cycle", "/deep"])
def test_unencodable_structures_are_500_not_a_crash(client, server, path):
    resp = client.get(path)
    if resp.status_code == 200 and path == "/deep":
        json.loads(resp.content)  # correct output is fine too
    else:
        assert_problem(resp, 500)
    assert server.alive()
    assert get_json(client, "/ok") == {"ok": True}


def test_large_document(client):
    got = get_json(client, "/large")
    assert len(got["items"]) == 50_000
    assert got["items"][-1] == {"i": 49_999, "s": "x" * 10}
