"""Issue 17 (GraphQL half): the engine, the HTTP endpoint and subscriptions, black-box against a
real server process (tests/apps/graphql_app.py) with the real `gql` client (HTTP and WebSocket
transports) and graphql-core's `build_client_schema`."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

gql_lib = pytest.importorskip("gql")
from gql import Client, GraphQLRequest, gql  # noqa: E402
from gql.transport.aiohttp import AIOHTTPTransport  # noqa: E402
from gql.transport.exceptions import TransportQueryError  # noqa: E402
from gql.transport.websockets import WebsocketsTransport  # noqa: E402
from graphql import build_client_schema, get_introspection_query, print_schema  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(serve):
    return serve("graphql_app", env={"GQL_MODE": "development"})


@pytest.fixture(scope="module")
def prod(serve):
    return serve("graphql_app", env={"GQL_MODE": "production"})


@pytest.fixture(scope="module")
def limited(serve):
    return serve("graphql_app", env={"GQL_MODE": "limits"})


def run(coro):
    return asyncio.run(coro)


async def http_execute(server, query: str, variables=None, **kw):
    transport = AIOHTTPTransport(url=server.url("/graphql"))
    async with Client(transport=transport, **kw) as session:
        return await session.execute(GraphQLRequest(query, variable_values=variables))


def post(server, body, accept="application/json", headers=None):
    headers = {**({"accept": accept} if accept else {}), **(headers or {})}
    return httpx.post(server.url("/graphql"), json=body, headers=headers, timeout=10)


# ---- the engine over HTTP, with the gql client -----------------------------------------------


def test_gql_client_queries_with_variables_fragments_aliases_and_directives(server):
    query = """
    query Q($id: Int!, $withEmail: Boolean!, $skipRole: Boolean = true) {
      greet: hello(name: "cello")
      plain: hello
      user(id: $id) { ...Basic email @include(if: $withEmail) role @skip(if: $skipRole) }
      admins: users(role: ADMIN) { name role }
    }
    fragment Basic on User { id name greeting(prefix: "Hi") }
    """
    data = run(http_execute(server, query, {"id": 1, "withEmail": True}))
    assert data["greet"] == "Hello, cello!"
    assert data["plain"] == "Hello, world!"
    assert data["user"] == {"id": 1, "name": "ada", "greeting": "Hi, ada", "email": "ada@example.com"}
    assert data["admins"] == [{"name": "ada", "role": "ADMIN"}]
    data = run(http_execute(server, query, {"id": 2, "withEmail": False, "skipRole": False}))
    assert data["user"] == {"id": 2, "name": "bob", "greeting": "Hi, bob", "role": "USER"}


def test_gql_client_mutation_with_input_object(server):
    query = """mutation M($u: NewUserInput!) { create_user(user: $u) { id name role email } }"""
    data = run(http_execute(server, query, {"u": {"name": "dee", "role": "ADMIN"}}))
    assert data["create_user"]["name"] == "dee"
    assert data["create_user"]["role"] == "ADMIN"
    assert data["create_user"]["email"] is None
    assert data["create_user"]["id"] >= 4


def test_variable_coercion_errors_are_request_errors(server):
    body = {"query": "query($id: Int!) { user(id: $id) { name } }", "variables": {"id": "not-an-int"}}
    legacy = post(server, body)
    assert legacy.status_code == 200
    assert "data" not in legacy.json()
    assert "$id" in legacy.json()["errors"][0]["message"]
    modern = post(server, body, accept="application/graphql-response+json")
    assert modern.status_code == 400
    assert modern.headers["content-type"].startswith("application/graphql-response+json")


def test_field_errors_give_partial_data_with_locations_and_path(server):
    r = post(server, {"query": "{ hello\n  boom }"}, accept="application/graphql-response+json")
    assert r.status_code == 200
    body = r.json()
    assert body["data"] == {"hello": "Hello, world!", "boom": None}
    [err] = body["errors"]
    assert err["message"] == "resolver failed"
    assert err["path"] == ["boom"]
    assert err["locations"] == [{"line": 2, "column": 3}]
    with pytest.raises(TransportQueryError) as exc:
        run(http_execute(server, "{ boom }"))
    assert exc.value.errors[0]["path"] == ["boom"]


def test_validation_errors_status_by_media_type(server):
    bad = {"query": "{ nope }"}
    r = post(server, bad)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert "nope" in r.json()["errors"][0]["message"]
    assert "locations" in r.json()["errors"][0]
    r = post(server, bad, accept="application/graphql-response+json")
    assert r.status_code == 400
    r = post(server, {"query": "{ hello "}, accept="application/graphql-response+json")
    assert r.status_code == 400 and "Syntax Error" in r.json()["errors"][0]["message"]


def test_introspection_loads_in_build_client_schema(server):
    r = post(server, {"query": get_introspection_query()})
    assert r.status_code == 200
    schema = build_client_schema(r.json()["data"])
    sdl = print_schema(schema)
    assert "type User" in sdl and "enum Role" in sdl and "input NewUserInput" in sdl
    assert "type Subscription" in sdl and "count(to: Int! = 3, delay: Float! = " in sdl
    # The gql client validates its queries against the fetched schema.
    data = run(http_execute(server, "{ hello }", fetch_schema_from_transport=True))
    assert data == {"hello": "Hello, world!"}


def test_get_queries_and_no_mutations_over_get(server):
    r = httpx.get(server.url("/graphql"), params={"query": "query($n: String!) { hello(name: $n) }",
                                                  "variables": json.dumps({"n": "get"})}, timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.json() == {"data": {"hello": "Hello, get!"}}
    r = httpx.get(
        server.url("/graphql"),
        params={"query": 'mutation { create_user(user: {name: "x"}) { id } }'},
        headers={"accept": "application/graphql-response+json"},
        timeout=10,
    )
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_bad_requests_are_problems(server):
    r = httpx.post(server.url("/graphql"), content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    r = httpx.post(server.url("/graphql"), content=b"query", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert post(server, {"variables": {}}).status_code == 400
    assert post(server, {"query": "{ hello }"}, accept="text/csv").status_code == 406
    r = httpx.post(server.url("/graphql"), content=b"{ hello }", headers={"content-type": "application/graphql"})
    assert r.json() == {"data": {"hello": "Hello, world!"}}


def test_batching(server):
    r = post(
        server, [{"query": "{ hello }"}, {"query": "query($n: String!) { hello(name: $n) }", "variables": {"n": "b"}}]
    )
    assert r.status_code == 200
    assert r.json() == [{"data": {"hello": "Hello, world!"}}, {"data": {"hello": "Hello, b!"}}]


def test_request_is_in_the_context(server):
    r = post(server, {"query": "{ client_header }"}, headers={"x-test": "yes"})
    assert r.json() == {"data": {"client_header": "yes"}}


# ---- DataLoader --------------------------------------------------------------------------------


def test_dataloader_batches_sibling_fields_and_caches_per_request(server):
    assert post(server, {"query": "{ reset }"}).json() == {"data": {"reset": True}}
    q = "{ users { name friends { name friends { id } } } }"
    r = post(server, {"query": q})
    assert "errors" not in r.json(), r.json()
    assert r.json()["data"]["users"][0]["friends"] == [
        {"name": "bob", "friends": [{"id": 1}]},
        {"name": "cy", "friends": [{"id": 1}, {"id": 2}]},
    ]
    batches = post(server, {"query": "{ batch_calls }"}).json()["data"]["batch_calls"]
    # Level 1: the friends of the 3 users in one call; level 2: only keys not cached yet.
    assert batches == [[2, 3, 1]], batches
    post(server, {"query": q})
    again = post(server, {"query": "{ batch_calls }"}).json()["data"]["batch_calls"]
    assert again == [[2, 3, 1], [2, 3, 1]], "the cache is per request: a new request loads again"


# ---- config: production, limits, tracing, playground ------------------------------------------


def test_production_refuses_introspection_and_has_no_playground(prod):
    r = post(prod, {"query": "{ __schema { types { name } } }"}, accept="application/graphql-response+json")
    assert r.status_code == 400
    assert "introspection" in r.json()["errors"][0]["message"].lower()
    assert post(prod, {"query": "{ __typename hello }"}).json() == {
        "data": {"__typename": "Query", "hello": "Hello, world!"}
    }
    r = httpx.get(prod.url("/graphql"), headers={"accept": "text/html"}, timeout=10)
    assert not r.headers.get("content-type", "").startswith("text/html")
    assert httpx.get(prod.url("/graphql/assets/graphiql.min.js"), timeout=10).status_code == 404
    # production() also limits depth to 15.
    deep = "{ users " + "{ friends " * 15 + "{ id }" + " }" * 15 + " }"
    r = post(prod, {"query": deep})
    assert r.status_code == 400 and r.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_DEEP"


def test_limits_are_enforced_before_execution(limited):
    r = post(limited, {"query": "{ users { friends { friends { id } } } }"})
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["extensions"]["code"] == "QUERY_TOO_DEEP" and err["extensions"]["depth"] == 4
    r = post(limited, {"query": "{ a: hello b: hello c: hello d: hello e: hello f: hello g: hello }"})
    assert r.status_code == 400
    assert r.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    # Fragments count as their fields.
    r = post(limited, {"query": "{ users { ...F } } fragment F on User { friends { friends { id } } }"})
    assert r.status_code == 400
    assert post(limited, {"query": "{ users { friends { id } } }"}).status_code == 200
    # Batching is off here.
    assert post(limited, [{"query": "{ hello }"}]).status_code == 400


def test_tracing_extension(limited):
    body = post(limited, {"query": "{ hello users { name } }"}).json()
    tracing = body["extensions"]["tracing"]
    assert tracing["version"] == 1 and tracing["duration"] > 0
    paths = [r["path"] for r in tracing["execution"]["resolvers"]]
    assert ["hello"] in paths and ["users", 0, "name"] in paths
    hello = next(r for r in tracing["execution"]["resolvers"] if r["path"] == ["hello"])
    assert hello["parentType"] == "Query" and hello["returnType"] == "String!"


def test_playground_is_served_offline(server):
    r = httpx.get(server.url("/graphql"), headers={"accept": "text/html"}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "GraphiQL" in r.text and "http" not in r.text.replace("http-equiv", "")
    for name in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js"):
        asset = httpx.get(server.url(f"/graphql/assets/{name}"), timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 5000, name
    assert httpx.get(server.url("/graphql/assets/nope.js"), timeout=10).status_code == 404


# ---- subscriptions over WebSocket -------------------------------------------------------------


def ws_transport(server, protocol: str, path: str = "/graphql") -> WebsocketsTransport:
    return WebsocketsTransport(url=f"ws://{server.host}:{server.port}{path}", subprotocols=[protocol])


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_subscription_with_gql_websocket_transport(server, protocol):
    async def go():
        async with Client(transport=ws_transport(server, protocol)) as session:
            got = [r["count"] async for r in session.subscribe(gql("subscription { count(to: 5) }"))]
            assert got == [1, 2, 3, 4, 5]
            # Queries run over the socket too.
            assert await session.execute(gql("{ hello }")) == {"hello": "Hello, world!"}

    run(go())


def test_subscriptions_at_the_ws_alias_and_http_get_at_the_same_path(server):
    async def go():
        async with Client(transport=ws_transport(server, "graphql-transport-ws", "/graphql/ws")) as session:
            got = [r["count"] async for r in session.subscribe(gql("subscription { count(to: 2) }"))]
            assert got == [1, 2]

    run(go())
    # A plain GET at the WebSocket's path is still GraphQL over HTTP.
    r = httpx.get(server.url("/graphql"), params={"query": "{ hello }"}, headers={"accept": "application/json"})
    assert r.status_code == 200 and r.json() == {"data": {"hello": "Hello, world!"}}


def test_subscription_validation_error(server):
    async def go():
        async with Client(transport=ws_transport(server, "graphql-transport-ws")) as session:
            with pytest.raises(TransportQueryError):
                async for _ in session.subscribe(gql("subscription { nope }")):
                    pass

    run(go())


def wait_for_event(server, text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = post(server, {"query": "{ events }"}).json()["data"]["events"]
        if text in seen:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen within {timeout} s: {seen}")


def test_generator_is_cancelled_when_the_client_leaves(server):
    async def go():
        async with Client(transport=ws_transport(server, "graphql-transport-ws")) as session:
            n = 0
            async for _ in session.subscribe(gql('subscription { forever(tag: "leave") }')):
                n += 1
                if n == 3:
                    break

    run(go())
    seen = wait_for_event(server, "forever-closed:leave")
    assert "forever-cancelled:leave" in seen or "forever-closed:leave" in seen


def test_high_message_rate_drops_nothing(server):
    total = 20000

    async def go():
        async with Client(transport=ws_transport(server, "graphql-transport-ws")) as session:
            expected = 1
            async for r in session.subscribe(gql(f"subscription {{ count(to: {total}) }}")):
                assert r["count"] == expected
                expected += 1
            return expected - 1

    assert run(go()) == total


def test_http_is_served_after_websocket_sessions(server):
    # Regression: each WebSocket upgrade used to leave the worker's queue count one lower
    # than it entered, after which every HTTP request was refused with 503.
    async def go():
        for _ in range(3):
            async with Client(transport=ws_transport(server, "graphql-transport-ws")) as session:
                assert await session.execute(gql("{ hello }")) == {"hello": "Hello, world!"}

    run(go())
    for _ in range(5):
        assert post(server, {"query": "{ hello }"}).status_code == 200
