"""``App.enable_graphql``: the GraphQL-over-HTTP endpoint, the GraphiQL playground and the
WebSocket subscription endpoint.

Status codes (GraphQL over HTTP): with ``Accept: application/graphql-response+json`` a request
that cannot run (parse, validation or variable errors) is 400 and one that ran is 200; with
``application/json`` (the legacy media type, also when no Accept is sent) every GraphQL answer is
200. In both, a query past ``max_depth``/``max_complexity`` is refused before it runs with 400
and the reason in ``errors[0].extensions.code`` (``QUERY_TOO_DEEP`` / ``QUERY_TOO_COMPLEX``). A
request that is not GraphQL at all (bad JSON, no ``query``, wrong media type or method) gets a
problem+json 400/405/406/415.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from ..errors import HTTPException
from ..responses import Response
from ._engine import GraphQL, Schema

STATIC = Path(__file__).resolve().parent.parent / "static" / "graphiql"
GRAPHQL_RESPONSE = "application/graphql-response+json"
ASSETS = {
    "react.production.min.js": "text/javascript; charset=utf-8",
    "react-dom.production.min.js": "text/javascript; charset=utf-8",
    "graphiql.min.js": "text/javascript; charset=utf-8",
    "graphiql.min.css": "text/css; charset=utf-8",
}

PLAYGROUND = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>GraphiQL</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ margin: 0; height: 100vh; overflow: hidden; }} #graphiql {{ height: 100vh; }}</style>
<link rel="stylesheet" href="{assets}/graphiql.min.css">
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="{assets}/react.production.min.js"></script>
<script src="{assets}/react-dom.production.min.js"></script>
<script src="{assets}/graphiql.min.js"></script>
<script>
const fetcher = GraphiQL.createFetcher({{url: {endpoint}}});
ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {{fetcher: fetcher, defaultEditorToolbarTabs: "variables"}}));
</script>
</body>
</html>
"""


def _schema_of(schema: Any) -> GraphQL:
    if schema is None:
        return GraphQL.from_decorated()
    if isinstance(schema, Schema):
        return schema.build()
    if isinstance(schema, GraphQL):
        return schema
    raise TypeError(f"enable_graphql(schema=...) takes a GraphQL or a Schema, not {type(schema).__name__}")


def _accepts(request: Any) -> str | None:
    """The response media type the client accepts (``None``: neither JSON type)."""
    accept = (request.headers.get("accept") or "").lower()
    if not accept.strip():
        return "application/json"
    ranges = {part.split(";")[0].strip(): part for part in accept.split(",")}
    for media in (GRAPHQL_RESPONSE, "application/json"):
        if media in ranges and "q=0" not in ranges[media].replace(" ", "").split(";q=0.")[0]:
            return media
    if "*/*" in ranges or "application/*" in ranges:
        return "application/json"
    return None


def _params(request: Any) -> Any:
    """The GraphQL request (a dict, or a list when batched) from the body or the query string."""
    if request.method == "GET":
        q = request.query
        params: dict[str, Any] = {"query": q.get("query"), "operationName": q.get("operationName") or None}
        for key in ("variables", "extensions"):
            raw = q.get(key)
            if raw:
                try:
                    params[key] = json.loads(raw)
                except ValueError:
                    raise HTTPException(400, f"the {key} parameter is not JSON") from None
        return params
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/graphql":
        return {"query": request.body().decode("utf-8", "replace")}
    if ctype != "application/json":
        raise HTTPException(415, "a GraphQL POST body is application/json")
    try:
        return json.loads(request.body())
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None


def _checked(params: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    if not isinstance(params, dict):
        raise HTTPException(400, "a GraphQL request is a JSON object")
    query, variables, op = params.get("query"), params.get("variables"), params.get("operationName")
    if not isinstance(query, str) or not query:
        raise HTTPException(400, "the request has no query")
    if variables is not None and not isinstance(variables, dict):
        raise HTTPException(400, "variables must be a JSON object")
    if op is not None and not isinstance(op, str):
        raise HTTPException(400, "operationName must be a string")
    return query, variables, op


def install(app: Any, config: Any, schema: Any, subscriptions_path: str | None) -> GraphQL:
    from ..config import GraphQLConfig
    from . import _ws

    if config is None:
        config = GraphQLConfig()
    elif not isinstance(config, GraphQLConfig):
        raise TypeError(f"enable_graphql() takes a GraphQLConfig, not {type(config).__name__}")
    gql = _schema_of(schema)
    _ = gql.schema  # a schema error shows at startup, not on the first request
    path = config.path
    limits = {
        "introspection": bool(config.introspection),
        "max_depth": config.max_depth,
        "max_complexity": config.max_complexity,
    }
    tracing = bool(config.tracing)
    batching = bool(config.batching)
    assets_url = path.rstrip("/") + "/assets"
    page = PLAYGROUND.format(assets=escape(assets_url), endpoint=json.dumps(path).replace("<", "\\u003c"))

    async def one(request: Any, params: Any, allowed: tuple[str, ...]) -> tuple[dict[str, Any], str | None]:
        query, variables, op = _checked(params)
        return await gql.run(
            query, variables, op, context={"request": request}, tracing=tracing, allowed=allowed, **limits
        )

    async def endpoint(request: Any) -> Any:
        if (
            request.method == "GET"
            and config.playground
            and "query" not in request.query
            and "text/html" in (request.headers.get("accept") or "")
        ):
            return Response.html(page)
        media = _accepts(request)
        if media is None:
            raise HTTPException(406, f"this endpoint answers {GRAPHQL_RESPONSE} or application/json")
        params = _params(request)
        # GET is safe: it may run queries only (GraphQL over HTTP), mutations need POST.
        allowed = ("query",) if request.method == "GET" else ("query", "mutation")
        if isinstance(params, list):
            if not batching:
                raise HTTPException(400, "batched requests are off (GraphQLConfig(batching=True))")
            if not params:
                raise HTTPException(400, "an empty batch")
            results = [await one(request, p, allowed) for p in params]
            body = [r for r, _ in results]
            status = 400 if any(refusal == "limit" for _, refusal in results) else 200
            return _answer(body, status, media)
        result, refusal = await one(request, params, allowed)
        if refusal == "method":
            resp = _answer(result, 405, media)
            resp.set_header("Allow", "POST")
            return resp
        if refusal == "limit" or (refusal == "invalid" and media == GRAPHQL_RESPONSE):
            return _answer(result, 400, media)
        return _answer(result, 200, media)

    app.route(path, ["GET", "POST"], name="graphql", include_in_schema=False)(endpoint)

    if config.playground:

        def graphiql_asset(name: str) -> Any:
            ctype = ASSETS.get(name)
            if ctype is None:
                raise HTTPException(404, "no such asset")
            resp = Response.file(str(STATIC / name), content_type=ctype)
            resp.set_header("Cache-Control", "public, max-age=86400")
            return resp

        app.route(assets_url + "/{name}", ["GET"], name="graphiql_asset", include_in_schema=False)(graphiql_asset)

    # Clients (gql's WebsocketsTransport, GraphiQL) open the WebSocket on the HTTP URL; the
    # `<path>/ws` alias is kept for clients configured with the earlier default.
    ws_paths = [subscriptions_path] if subscriptions_path else [path, path.rstrip("/") + "/ws"]
    _ws.install(app, gql, ws_paths, limits)
    app._graphql = gql
    return gql


def _answer(body: Any, status: int, media: str) -> Response:
    resp = Response.json(body, status=status)
    resp.set_header("Content-Type", f"{media}; charset=utf-8")
    return resp
