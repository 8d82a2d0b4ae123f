"""OpenAPI 3.1 from the routes, their typed parameters and pydantic JSON Schemas.

``build(app, ...)`` walks the flattened routes (blueprints included) once: each handler's Plan
(the same analysis that serves requests, dependencies included) gives its path, query, header
and cookie parameters and its request body; the response model (or return annotation) gives
the success response. Every operation documents the problem+json error responses (422 with the
validation errors when it has inputs). Routes with ``include_in_schema=False`` (the docs
themselves) and non-HTTP routes (WebSocket) are left out.

``install(app, ...)`` serves ``/openapi.json``, Swagger UI at ``/docs`` and ReDoc at ``/redoc``
from the assets vendored in ``cello/static`` — never a CDN.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from . import _coerce
from ._coerce import EMPTY

if TYPE_CHECKING:
    from .app import App

STATIC = FsPath(__file__).parent / "static"
REF = "#/components/schemas/{model}"
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")
_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::((?:[^{}]|\{[^{}]*\})*))?\}")

PROBLEM = {
    "title": "ProblemDetails",
    "type": "object",
    "description": "An RFC 9457 (7807) problem document.",
    "properties": {
        "type": {"type": "string", "default": "about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}
VALIDATION_ERROR = {
    "title": "ValidationError",
    "type": "object",
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
        "input": {},
        "ctx": {"type": "object"},
    },
    "required": ["loc", "msg", "type"],
}
HTTP_VALIDATION_ERROR = {
    "title": "HTTPValidationError",
    "allOf": [
        {"$ref": REF.format(model="ProblemDetails")},
        {
            "type": "object",
            "properties": {"errors": {"type": "array", "items": {"$ref": REF.format(model="ValidationError")}}},
            "required": ["errors"],
        },
    ],
}


class _Schemas:
    """JSON Schemas for annotations; named models go to ``components.schemas``."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {
            "ProblemDetails": PROBLEM,
            "ValidationError": VALIDATION_ERROR,
            "HTTPValidationError": HTTP_VALIDATION_ERROR,
        }

    def of(self, tp: Any, mode: str = "validation") -> dict[str, Any]:
        if tp is EMPTY or tp is Any or tp is inspect.Parameter.empty:
            return {}
        try:
            from pydantic import TypeAdapter
        except ImportError:
            return _plain_schema(tp)
        try:
            schema = TypeAdapter(tp).json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a type pydantic cannot describe: document it as "any value"
            return {}
        self.components.update(schema.pop("$defs", {}))
        inner, _ = _coerce.unwrap_optional(tp)
        named = _coerce.is_model(inner) or (isinstance(inner, type) and dataclasses.is_dataclass(inner))
        if named and inner is tp and "properties" in schema:
            name = inner.__name__
            self.components[name] = schema
            return {"$ref": REF.format(model=name)}
        return schema


def _plain_schema(tp: Any) -> dict[str, Any]:
    """Without pydantic: the common scalars only."""
    import datetime
    import uuid

    inner, optional = _coerce.unwrap_optional(tp)
    table = {
        int: {"type": "integer"},
        float: {"type": "number"},
        bool: {"type": "boolean"},
        str: {"type": "string"},
        uuid.UUID: {"type": "string", "format": "uuid"},
        datetime.datetime: {"type": "string", "format": "date-time"},
        datetime.date: {"type": "string", "format": "date"},
    }
    if _coerce.is_sequence(inner):
        schema: dict[str, Any] = {"type": "array", "items": _plain_schema(_coerce.item_type(inner))}
    else:
        schema = dict(table.get(inner, {}))
    return {"anyOf": [schema, {"type": "null"}]} if optional and schema else schema


def _constrain(schema: dict[str, Any], marker: Any) -> dict[str, Any]:
    if marker is None:
        return schema
    out = dict(schema)
    for attr, key in (
        ("ge", "minimum"),
        ("le", "maximum"),
        ("gt", "exclusiveMinimum"),
        ("lt", "exclusiveMaximum"),
        ("min_length", "minLength"),
        ("max_length", "maxLength"),
        ("pattern", "pattern"),
        ("title", "title"),
    ):
        value = getattr(marker, attr, None)
        if value is None:
            continue
        if attr in ("min_length", "max_length") and out.get("type") == "array":
            key = "minItems" if attr == "min_length" else "maxItems"
        if "anyOf" in out and key not in ("title",):
            # Optional[X]: the constraint belongs to X.
            out["anyOf"] = [dict(s, **{key: value}) if s.get("type") != "null" else s for s in out["anyOf"]]
        else:
            out[key] = value
    if marker.examples:
        out["examples"] = list(marker.examples)
    return out


def _path_template(path: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """Cello's ``{id:int}`` → OpenAPI's ``{id}`` plus the schema the constraint implies."""
    schemas: dict[str, dict[str, Any]] = {}

    def sub(m: re.Match[str]) -> str:
        name, constraint = m.group(2), (m.group(3) or "")
        if constraint == "int":
            schemas[name] = {"type": "integer"}
        elif constraint == "float":
            schemas[name] = {"type": "number"}
        elif constraint == "uuid":
            schemas[name] = {"type": "string", "format": "uuid"}
        elif constraint.startswith("re(") and constraint.endswith(")"):
            schemas[name] = {"type": "string", "pattern": constraint[3:-1]}
        else:
            schemas[name] = {"type": "string"}
        return "{" + name + "}"

    return _PARAM.sub(sub, path), schemas


def _docstring(handler: Any) -> tuple[str | None, str | None]:
    doc = inspect.getdoc(handler)
    if not doc:
        return None, None
    first, _, rest = doc.partition("\n\n")
    return " ".join(first.split()), (rest.strip() or None)


def _operation_id(name: str, method: str, path: str, used: set[str]) -> str:
    base = re.sub(r"\W", "_", f"{name}_{method.lower()}")
    op, n = base, 2
    while op in used:
        op = f"{base}_{n}"
        n += 1
    used.add(op)
    return op


def _security(app: App) -> tuple[dict[str, Any], list[dict[str, list[str]]]]:
    """Security schemes of the auth layers the app enabled (JWT → bearer, API key, Basic)."""
    try:
        config = app.server_config()
    except Exception:  # noqa: BLE001 - the docs must not fail because of an unrelated config error
        return {}, []
    schemes: dict[str, Any] = {}
    jwt = config.get("jwt") or {}
    # A present section is an enabled layer (issue 11 writes no `enabled` key).
    if jwt and jwt.get("enabled", True):
        schemes["bearerAuth"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    api_key = config.get("apiKey") or config.get("api_key") or {}
    if api_key and api_key.get("enabled", True):
        header = api_key.get("headerName") or api_key.get("header_name") or "X-API-Key"
        schemes["apiKeyAuth"] = {"type": "apiKey", "in": "header", "name": header}
    basic = config.get("basicAuth") or config.get("basic_auth") or {}
    if basic and basic.get("enabled", True):
        schemes["basicAuth"] = {"type": "http", "scheme": "basic"}
    return schemes, [{name: []} for name in schemes]


def build(
    app: App,
    *,
    title: str = "Cello API",
    version: str = "0.1.0",
    description: str | None = None,
    servers: list[Any] | None = None,
) -> dict[str, Any]:
    from . import di, response_model

    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    used: set[str] = set()
    for route in app._flatten():
        if not route.include_in_schema:
            continue
        methods = [m for m in route.methods if m in HTTP_METHODS]
        if not methods:
            continue  # WebSocket and other non-HTTP routes
        template, path_schemas = _path_template(route.path)
        plan = di.analyze(app, route.handler, tuple(path_schemas))
        guard_fields = [
            f
            for g in route.guards
            if isinstance(g, di.Depends) and callable(g.dependency)
            for f in di.analyze(app, g.dependency, tuple(path_schemas)).walk()
        ]
        fields = _unique([*guard_fields, *plan.walk()])
        parameters, body = _parameters(fields, path_schemas, schemas)
        summary, doc_description = _docstring(route.handler)
        for method in methods:
            op: dict[str, Any] = {
                "summary": route.summary or summary or route.name.replace("_", " ").capitalize(),
                "operationId": route.operation_id or _operation_id(route.name, method, template, used),
            }
            if route.tags:
                op["tags"] = list(route.tags)
                tags.extend(t for t in route.tags if t not in tags)
            desc = route.description or doc_description
            if desc:
                op["description"] = desc
            if route.deprecated:
                op["deprecated"] = True
            if parameters:
                op["parameters"] = parameters
            if body is not None and method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                op["requestBody"] = body
            op["responses"] = _responses(route, response_model.model_of(route, route.handler), schemas,
                                         has_input=bool(parameters) or body is not None)  # fmt: skip
            paths.setdefault(template, {})[method.lower()] = op
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": info}
    if servers:
        doc["servers"] = [s if isinstance(s, dict) else {"url": str(s)} for s in servers]
    doc["paths"] = paths
    components: dict[str, Any] = {"schemas": schemas.components}
    security_schemes, security = _security(app)
    if security_schemes:
        components["securitySchemes"] = security_schemes
        doc["security"] = security
    doc["components"] = components
    if tags:
        doc["tags"] = [{"name": t} for t in tags]
    return doc


def _unique(fields: list[Any]) -> list[Any]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in fields:
        key = (f.source, f.key)
        if f.source in ("request", "background") or key in seen:
            continue
        seen.add(key)
        out.append(f)
    return out


def _parameters(
    fields: list[Any], path_schemas: dict[str, dict[str, Any]], schemas: _Schemas
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    params: list[dict[str, Any]] = []
    bodies, forms = [], []
    declared_path = set()
    for f in fields:
        if f.source == "body":
            bodies.append(f)
            continue
        if f.source in ("form", "file"):
            forms.append(f)
            continue
        if f.source not in ("path", "query", "header", "cookie"):
            continue
        if f.source == "path":
            declared_path.add(f.key)
            schema = schemas.of(f.annotation) if f.annotation is not EMPTY else {}
            schema = schema or path_schemas.get(f.key, {"type": "string"})
        else:
            schema = schemas.of(f.annotation)
        schema = _constrain(schema, f.marker)
        if not f.required and f.default is not EMPTY and f.default is not None and _plain(f.default):
            schema = dict(schema, default=f.default.value if hasattr(f.default, "value") else f.default)
        p: dict[str, Any] = {"name": f.key, "in": f.source, "required": f.source == "path" or f.required}
        if f.marker is not None and f.marker.description:
            p["description"] = f.marker.description
        if f.marker is not None and f.marker.deprecated:
            p["deprecated"] = True
        p["schema"] = schema
        params.append(p)
    for name, schema in path_schemas.items():
        if name not in declared_path:
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params, _request_body(bodies, forms, schemas)


def _plain(value: Any) -> bool:
    import enum

    return isinstance(value, (str, int, float, bool, enum.Enum)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value)
    )


def _request_body(bodies: list[Any], forms: list[Any], schemas: _Schemas) -> dict[str, Any] | None:
    if forms:
        props: dict[str, Any] = {}
        required = []
        multipart = False
        for f in forms:
            if f.source == "file":
                multipart = True
                props[f.key] = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
            else:
                props[f.key] = _constrain(schemas.of(f.annotation) or {"type": "string"}, f.marker)
            if f.required:
                required.append(f.key)
        # Extra fields are ignored by the handler; declaring none keeps generated clients honest.
        schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            schema["required"] = required
        media = "multipart/form-data" if multipart else "application/x-www-form-urlencoded"
        return {"required": bool(required), "content": {media: {"schema": schema}}}
    if not bodies:
        return None
    embed = len(bodies) > 1 or any(f.marker is not None and f.marker.embed for f in bodies)
    if embed:
        props = {f.key: _constrain(schemas.of(f.annotation), f.marker) for f in bodies}
        schema = {"type": "object", "properties": props}
        required = [f.key for f in bodies if f.required]
        if required:
            schema["required"] = required
        return {"required": bool(required), "content": {"application/json": {"schema": schema}}}
    f = bodies[0]
    schema = _constrain(schemas.of(f.annotation), f.marker)
    return {"required": f.required, "content": {"application/json": {"schema": schema}}}


def _responses(route: Any, model: Any, schemas: _Schemas, *, has_input: bool) -> dict[str, Any]:
    status = str(route.status_code or 200)
    out: dict[str, Any] = {}
    if status == "204":
        out[status] = {"description": "No Content"}
    else:
        schema = schemas.of(model, mode="serialization") if model is not None else {}
        out[status] = {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}
    if has_input:
        out["422"] = {
            "description": "Validation Error",
            "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="HTTPValidationError")}}},
        }
    out["default"] = {
        "description": "Error (RFC 9457 problem details)",
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="ProblemDetails")}}},
    }
    for code, extra in (route.responses or {}).items():
        key = str(code)
        merged = dict(out.get(key, {}))
        merged.update(extra)
        merged.setdefault("description", "Response")
        out[key] = merged
    return out


# ---- serving ------------------------------------------------------------------------------

SWAGGER_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "{openapi_url}", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout"}});
</script>
</body>
</html>
"""

REDOC_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - ReDoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<redoc spec-url="{openapi_url}"></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""

ASSETS = {
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "favicon-32x32.png": ("swagger-ui/favicon-32x32.png", "image/png"),
    "redoc.standalone.js": ("redoc/redoc.standalone.js", "text/javascript; charset=utf-8"),
}


def install(
    app: App,
    *,
    title: str,
    version: str,
    description: str | None,
    servers: list[Any] | None,
    openapi_url: str,
    docs_url: str | None,
    redoc_url: str | None,
) -> None:
    from html import escape

    from .responses import Response

    spec: dict[str, Any] = {}
    app._openapi_options = {"title": title, "version": version, "description": description, "servers": servers}

    def openapi_json() -> Any:
        # Built on first use, when every route is registered; the same document afterwards.
        if not spec:
            spec.update(build(app, **app._openapi_options))
        return spec

    app.route(openapi_url, ["GET"], name="openapi", include_in_schema=False)(openapi_json)
    assets_url = (docs_url or redoc_url or "/docs").rstrip("/") + "/assets"
    page = {"title": escape(title), "openapi_url": escape(openapi_url), "assets": escape(assets_url)}

    if docs_url:

        def swagger_ui() -> Any:
            return Response.html(SWAGGER_HTML.format(**page))

        app.route(docs_url, ["GET"], name="swagger_ui", include_in_schema=False)(swagger_ui)
    if redoc_url:

        def redoc() -> Any:
            return Response.html(REDOC_HTML.format(**page))

        app.route(redoc_url, ["GET"], name="redoc", include_in_schema=False)(redoc)

    def docs_asset(name: str) -> Any:
        entry = ASSETS.get(name)
        if entry is None:
            from .errors import HTTPException

            raise HTTPException(404, "no such asset")
        rel, ctype = entry
        resp = Response.file(str(STATIC / rel), content_type=ctype)
        resp.set_header("Cache-Control", "public, max-age=86400")
        return resp

    app.route(assets_url + "/{name}", ["GET"], name="docs_asset", include_in_schema=False)(docs_asset)


__all__ = ["build", "install"]
