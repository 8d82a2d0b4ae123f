"""Issue 17 item 1: schemas built in Python (`Schema().query(...).build()`, `GraphQL().add_*`)
executed with `await gql.execute(query, variables=None, operation_name=None)`."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import AsyncIterator

import pytest
from cello.graphql import DataLoader, Field, GraphQL, Schema
from graphql import build_client_schema, get_introspection_query


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int
    color: Color = Color.RED
    label: str | None = None

    @Field
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


@dataclasses.dataclass
class PointIn:
    x: int
    y: int = 0


def point(info, p: PointIn, color: Color = Color.BLUE) -> Point:
    assert isinstance(p, PointIn) and isinstance(color, Color)
    return Point(p.x, p.y, color)


def points(info, n: int = 2) -> list[Point | None]:
    return [Point(i, -i) for i in range(n)] + [None]


async def slow_echo(info, text: str) -> str:
    await asyncio.sleep(0)
    return text


def add(info, a: int, b: int) -> int:
    return a + b


async def ticks(info, n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def run(coro):
    return asyncio.run(coro)


def test_schema_builder_executes_queries_and_mutations():
    gql = Schema().query(point, points, slow_echo).mutation(add).subscription(ticks).build()
    assert isinstance(gql, GraphQL)
    res = run(gql.execute("{ point(p: {x: 3, y: -4}) { x y color norm1 label } }"))
    assert res == {"data": {"point": {"x": 3, "y": -4, "color": "BLUE", "norm1": 7, "label": None}}}
    res = run(gql.execute('query($n: Int) { points(n: $n) { x } e: slow_echo(text: "hi") }', {"n": 1}))
    assert res == {"data": {"points": [{"x": 0}, None], "e": "hi"}}
    res = run(gql.execute('query A { a: slow_echo(text: "a") } mutation B { add(a: 1, b: 2) }', operation_name="B"))
    assert res == {"data": {"add": 3}}
    res = run(gql.execute("{ add }"))
    assert "data" not in res and "Cannot query field 'add' on type 'Query'" in res["errors"][0]["message"]


def test_graphql_add_methods_and_introspection():
    gql = GraphQL().add_query(points).add_query(slow_echo, name="echo").add_subscription(ticks)
    res = run(gql.execute(get_introspection_query()))
    schema = build_client_schema(res["data"])
    assert set(schema.query_type.fields) == {"points", "echo"}
    assert str(schema.get_type("Point").fields["label"].type) == "String"
    assert str(schema.get_type("Point").fields["x"].type) == "Int!"
    assert str(schema.query_type.fields["points"].type) == "[Point]!"

    async def sub():
        stream = await gql.subscribe("subscription { ticks(n: 3) }")
        return [item["data"]["ticks"] async for item in stream]

    assert run(sub()) == [0, 1, 2]


def test_documents_are_cached_per_query_text():
    gql = Schema().query(slow_echo).build()
    q = '{ slow_echo(text: "x") }'
    first = gql.document(q)
    assert gql.document(q) is first
    assert run(gql.execute(q)) == {"data": {"slow_echo": "x"}}


def test_bad_annotations_fail_at_build():
    def untyped(info, x):
        return x

    with pytest.raises(TypeError, match="annotation"):
        Schema().query(untyped).build()
    with pytest.raises(TypeError, match="query field"):
        GraphQL().add_mutation(add).schema  # noqa: B018


def test_dataloader_outside_and_inside_an_operation():
    calls: list[list[int]] = []

    def batch(keys):
        calls.append(list(keys))
        return [k * 10 if k >= 0 else ValueError("negative") for k in keys]

    loader = DataLoader(batch)

    async def value(info, k: int) -> int | None:
        return await loader.load(k)

    gql = Schema().query(value).build()
    res = run(gql.execute("{ a: value(k: 1) b: value(k: 2) c: value(k: 1) d: value(k: -1) }"))
    assert res["data"] == {"a": 10, "b": 20, "c": 10, "d": None}
    assert res["errors"][0]["message"] == "negative" and res["errors"][0]["path"] == ["d"]
    assert calls == [[1, 2, -1]]

    async def direct():
        return await asyncio.gather(loader.load(5), loader.load(6))

    assert run(direct()) == [50, 60] and calls[-1] == [5, 6]
