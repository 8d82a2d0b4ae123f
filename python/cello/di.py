"""Dependency injection: ``Depends`` and the per-callable ``Plan`` that resolves parameters.

A handler and a dependency are analysed the same way, once: each parameter becomes a
``Field`` with a getter. Per request, ``Ctx`` holds the dependency cache (one call per
dependency per request), the generators to close after the response and the request's
``BackgroundTasks``. A plan is async when anything in its tree is, so a sync handler with
sync dependencies stays a plain call on the loop (or in the pool when ``blocking=True``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _coerce
from ._coerce import EMPTY, Invalid
from .params import Param, RequestValidationError, _run_guards

if TYPE_CHECKING:
    from .app import App
    from .routing import RouteDef

log = logging.getLogger("cello.error")


class Depends:
    """``Depends(dependency)``: a callable (sync, async, generator or async generator with
    teardown) or the name of a singleton (``app.register_singleton``). ``Depends()`` in an
    ``Annotated`` parameter uses the annotation itself as the callable."""

    __slots__ = ("dependency", "use_cache")

    def __init__(self, dependency: Any = None, *, use_cache: bool = True) -> None:
        self.dependency = dependency
        self.use_cache = use_cache

    def __repr__(self) -> str:
        dep = self.dependency
        return f"Depends({getattr(dep, '__name__', repr(dep))})"

    # A Depends is also usable as a route guard (``guards=[Depends(check)]``).


class _Errors(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def field_error(loc: list[Any], e: Invalid, raw: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"type": e.type, "loc": [*loc, *e.loc], "msg": e.msg, "input": _jsonable(raw)}
    if e.ctx:
        err["ctx"] = {k: _jsonable(v) for k, v in e.ctx.items()}
    return err


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def _missing(loc: list[Any]) -> _Errors:
    return _Errors([{"type": "missing", "loc": loc, "msg": "Field required", "input": None}])


def _pydantic_errors(prefix: list[Any], exc: Any) -> _Errors:
    return _Errors(
        [
            {
                "type": err.get("type"),
                "loc": [*prefix, *err.get("loc", ())],
                "msg": err.get("msg"),
                "input": _jsonable(err.get("input")),
                **({"ctx": {k: _jsonable(v) for k, v in err["ctx"].items()}} if err.get("ctx") else {}),
            }
            for err in exc.errors()
        ]
    )


@dataclass(eq=False)
class Field:
    """One parameter of a handler or dependency: where it comes from and how to get it."""

    name: str
    source: str  # request | background | depends | path | query | header | cookie | body | form | file
    key: str
    annotation: Any
    marker: Param | None
    required: bool
    default: Any
    get: Callable[[Any], Any] | None = None
    dep: Depends | None = None
    dep_plan: Plan | None = None
    positional: bool = False


class Plan:
    """How to call ``call``: its fields, its kind (sync/async/gen/agen), whether it needs a Ctx."""

    def __init__(self, call: Any, fields: list[Field], kind: str) -> None:
        self.call = call
        self.fields = fields
        self.kind = kind
        subs = [f.dep_plan for f in fields if f.dep_plan is not None]
        self.is_async = kind in ("async", "agen") or any(p.is_async for p in subs)
        self.needs_ctx = any(f.source in ("depends", "background") for f in fields)
        self.positional = any(f.positional for f in fields)
        self.getters = [(f.name, f.get) for f in fields if f.get is not None]

    def walk(self) -> list[Field]:
        """Every field of this plan and of its dependencies (for OpenAPI), depth first."""
        out = []
        for f in self.fields:
            if f.dep_plan is not None:
                out.extend(f.dep_plan.walk())
            else:
                out.append(f)
        return out


class Ctx:
    """Per-request state shared by a handler and its dependencies."""

    __slots__ = ("app", "background", "cache", "errors", "exits", "path_params")

    def __init__(self, app: App, path_params: tuple[str, ...]) -> None:
        self.app = app
        self.path_params = path_params
        self.cache: dict[Any, Any] = {}
        self.exits: list[Any] = []
        self.errors: list[dict[str, Any]] = []
        self.background: Any = None


# ---- analysis ---------------------------------------------------------------------------


def _kind(call: Any) -> str:
    target = call
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and not isinstance(call, type):
        target = getattr(call, "__call__", call)  # noqa: B004 - a callable instance
    if inspect.isasyncgenfunction(target):
        return "agen"
    if inspect.isgeneratorfunction(target):
        return "gen"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


def _hints(call: Any) -> dict[str, Any]:
    target = call.__init__ if isinstance(call, type) else call
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(target, "__call__", target)  # noqa: B004
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - one unresolvable annotation: resolve the others one by one
        pass
    hints = {}
    namespace = getattr(target, "__globals__", {})
    for name, ann in getattr(target, "__annotations__", {}).items():
        try:
            hints[name] = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307 - annotations
        except Exception:  # noqa: BLE001 - left as the raw annotation
            continue
    return hints


def _split_annotated(ann: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(ann) is typing.Annotated:
        base, *meta = typing.get_args(ann)
        return base, meta
    return ann, []


def analyze(
    app: App, call: Any, path_params: tuple[str, ...], *, overrides: bool = True, websocket: bool = False
) -> Plan:
    """Turn ``call``'s signature into a Plan (once, at start-up). For a WebSocket handler
    (``websocket=True``) the "request" every getter sees is the ``WebSocket`` itself, and a
    parameter named ``ws``/``websocket`` receives it too."""
    from ._cello import Request
    from .background import BackgroundTasks
    from .websocket import SyncWebSocket, WebSocket

    try:
        sig = inspect.signature(call)
    except (TypeError, ValueError):
        sig = None
    params = [p for p in (sig.parameters.values() if sig else []) if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    hints = _hints(call)
    fields: list[Field] = []
    for p in params:
        raw_ann = hints.get(p.name, p.annotation)
        ann, meta = _split_annotated(raw_ann)
        marker: Any = next((m for m in meta if isinstance(m, (Param, Depends))), None)
        default = p.default
        if isinstance(default, (Param, Depends)):
            marker, default = default, EMPTY
        if default is inspect.Parameter.empty:
            default = EMPTY
        if isinstance(marker, Param) and marker.default is not EMPTY:
            default = marker.default
        positional = p.kind == p.POSITIONAL_ONLY
        if isinstance(marker, Depends):
            dep = marker if marker.dependency is not None else Depends(ann, use_cache=marker.use_cache)
            f = Field(p.name, "depends", p.name, ann, None, True, EMPTY, dep=dep, positional=positional)
            f.dep_plan = _dep_plan(app, dep.dependency, path_params, overrides)
            fields.append(f)
            continue
        if ann is BackgroundTasks:
            fields.append(Field(p.name, "background", p.name, ann, None, True, EMPTY, positional=positional))
            continue
        is_request = marker is None and (
            p.name in ("request", "req")
            or ann is Request
            or ann is WebSocket
            or ann is SyncWebSocket
            or (websocket and p.name in ("ws", "websocket") and ann is inspect.Parameter.empty)
            or (len(params) == 1 and p.name not in path_params and ann is inspect.Parameter.empty)
        )
        if is_request:
            fields.append(Field(p.name, "request", p.name, ann, None, True, EMPTY, _identity, positional=positional))
            continue
        if ann is inspect.Parameter.empty:
            ann = EMPTY
        if isinstance(marker, Param):
            source = marker.source
        elif p.name in path_params:
            source = "path"
        elif _coerce.is_body_type(ann):
            source = "body"
        else:
            source = "query"
        if source == "path" and p.name not in path_params and not (marker and marker.alias in path_params):
            raise ValueError(f"{getattr(call, '__name__', call)}: Path parameter {p.name!r} is not in the route path")
        key = (marker.alias if marker is not None else None) or p.name
        if source == "header" and not (marker and marker.alias) and (marker is None or marker.convert_underscores):
            key = p.name.replace("_", "-")
        _, optional = _coerce.unwrap_optional(ann)
        required = default is EMPTY and not (marker is not None and marker.default_factory is not None)
        if required and optional and marker is None:
            required, default = False, None
        fields.append(Field(p.name, source, key, ann, marker, required, default, positional=positional))
    bodies = [f for f in fields if f.source == "body"]
    embed = len(bodies) > 1 or any(f.marker is not None and f.marker.embed for f in bodies)
    for f in fields:
        if f.get is None and f.source not in ("depends", "background"):
            f.get = _getter(f, embed)
    return Plan(call, fields, _kind(call))


def _identity(request: Any) -> Any:
    return request


def _field_async(app: App, f: Field, path_params: tuple[str, ...]) -> bool:
    """Is this dependency (after the overrides in place at start-up) async anywhere in its tree?"""
    dep = f.dep.dependency  # type: ignore[union-attr]
    overrides = app.dependency_overrides
    if overrides and dep in overrides and not isinstance(dep, str):
        plan = _plans(app, overrides[dep], path_params)
    else:
        plan = f.dep_plan
    if plan is None:
        return False
    return plan.kind in ("async", "agen") or any(
        _field_async(app, sub, path_params) for sub in plan.fields if sub.dep is not None
    )


def _dep_plan(app: App, dependency: Any, path_params: tuple[str, ...], overrides: bool) -> Plan | None:
    if isinstance(dependency, str):
        return None  # a singleton name: resolved per request (it may be registered at startup)
    if not callable(dependency):
        raise TypeError(f"Depends({dependency!r}): a dependency is a callable or a registered singleton name")
    return _plans(app, dependency, path_params)


def _plans(app: App, dependency: Any, path_params: tuple[str, ...]) -> Plan:
    cache = app.__dict__.setdefault("_cello_dep_plans", {})
    key = (dependency, path_params)
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = analyze(app, dependency, path_params)
    return plan


def _default(f: Field) -> Any:
    if f.marker is not None and f.marker.default_factory is not None:
        return f.marker.default_factory()
    return f.default


def _getter(f: Field, embed: bool) -> Callable[[Any], Any]:
    name, key, source, required = f.name, f.key, f.source, f.required
    loc = [source, key]
    if source == "body":
        return _body_getter(f, embed)
    if source == "file":
        as_bytes = _coerce.unwrap_optional(f.annotation)[0] is bytes

        def get_file(request: Any) -> Any:
            upload = request.files().get(key)
            if upload is None:
                if required:
                    raise _missing(loc)
                return _default(f)
            return upload.read() if as_bytes else upload

        return get_file
    seq = _coerce.is_sequence(f.annotation)
    if seq:
        convert_many = _coerce.sequence_coercer(f.annotation, f.marker)

        def get_many(request: Any) -> Any:
            if source == "query":
                raw = request.query_list(key)
            elif source == "form":
                raw = request.form_list(key)
            elif source == "header":
                raw = request.headers.getlist(key)
            else:
                one = request.cookies.get(key)
                raw = [] if one is None else [one]
            if not raw:
                if required:
                    raise _missing(loc)
                return _default(f)
            try:
                return convert_many(raw)
            except Invalid as e:
                raise _Errors([field_error(loc, e, raw[e.loc[0]] if e.loc else raw)]) from None

        return get_many
    convert = _coerce.coercer(f.annotation, f.marker)

    def lookup(request: Any) -> Any:
        if source == "query":
            return request.query.get(key)
        if source == "path":
            return request.params.get(key)
        if source == "header":
            return request.headers.get(key)
        if source == "cookie":
            return request.cookies.get(key)
        return request.form().get(key)

    if source == "path":

        def get_path(request: Any) -> Any:
            raw = request.params[key]
            try:
                return convert(raw)
            except Invalid as e:
                raise _Errors([field_error(loc, e, raw)]) from None

        return get_path

    if source == "query":

        def get_query(request: Any) -> Any:
            raw = request.query.get(key)
            if raw is None:
                if required:
                    raise _missing(loc)
                return _default(f)
            try:
                return convert(raw)
            except Invalid as e:
                raise _Errors([field_error(loc, e, raw)]) from None

        return get_query

    def get(request: Any) -> Any:
        raw = lookup(request)
        if raw is None:
            if required:
                raise _missing(loc)
            return _default(f)
        try:
            return convert(raw)
        except Invalid as e:
            raise _Errors([field_error(loc, e, raw)]) from None

    get.__name__ = f"get_{name}"
    return get


def body_validator(tp: Any) -> Callable[[Any], Any]:
    """Validate a JSON value as ``tp``; raises pydantic's ValidationError or ``Invalid``."""
    inner, _ = _coerce.unwrap_optional(tp)
    if inner is EMPTY or inner is Any:
        return lambda v: v
    if _coerce.is_model(inner):
        return inner.model_validate
    try:
        from pydantic import TypeAdapter
    except ImportError:
        import dataclasses

        if isinstance(inner, type) and dataclasses.is_dataclass(inner):

            def construct(v: Any) -> Any:
                if not isinstance(v, dict):
                    raise Invalid("dict_type", "Input should be a valid dictionary")
                try:
                    return inner(**v)
                except TypeError as e:
                    raise Invalid("value_error", str(e)) from None

            return construct
        return lambda v: v
    return TypeAdapter(tp).validate_python


def _body_getter(f: Field, embed: bool) -> Callable[[Any], Any]:
    validate = body_validator(f.annotation)
    key, required = f.key, f.required
    prefix: list[Any] = ["body", key] if embed else ["body"]

    def get_body(request: Any) -> Any:
        if not request.body():
            if required:
                raise _missing(prefix)
            return _default(f)
        data = request.json()
        if embed:
            if not isinstance(data, dict):
                raise _Errors([{"type": "dict_type", "loc": ["body"], "msg": "Input should be a valid dictionary",
                                "input": _jsonable(data)}])  # fmt: skip
            if key not in data:
                if required:
                    raise _missing(prefix)
                return _default(f)
            data = data[key]
        try:
            return validate(data)
        except Invalid as e:
            raise _Errors([field_error(prefix, e, data)]) from None
        except Exception as e:
            if hasattr(e, "errors") and type(e).__name__ == "ValidationError":
                raise _pydantic_errors(prefix, e) from None
            raise

    return get_body


# ---- resolution ---------------------------------------------------------------------------


def _target(f: Field, ctx: Ctx) -> tuple[Any, Plan | None]:
    """The callable (after overrides) and its plan; a singleton name gives its value and None."""
    dep = f.dep.dependency  # type: ignore[union-attr]
    overrides = ctx.app.dependency_overrides
    if overrides and dep in overrides:
        dep = overrides[dep]
        if isinstance(f.dep.dependency, str):  # type: ignore[union-attr]
            return dep, None  # an overridden singleton name: the override is the value
        return dep, _plans(ctx.app, dep, ctx.path_params)
    if isinstance(dep, str):
        singletons = ctx.app._singletons
        if dep not in singletons:
            raise LookupError(f"Depends({dep!r}): no singleton registered under that name (app.register_singleton)")
        return singletons[dep], None
    plan = f.dep_plan
    if plan is None or plan.call is not dep:
        plan = _plans(ctx.app, dep, ctx.path_params)
    return dep, plan


def _call(plan: Plan, kwargs: dict[str, Any]) -> Any:
    if plan.positional:
        return plan.call(*[kwargs[f.name] for f in plan.fields if f.positional],
                         **{f.name: kwargs[f.name] for f in plan.fields if not f.positional})  # fmt: skip
    return plan.call(**kwargs)


def _background(ctx: Ctx) -> Any:
    if ctx.background is None:
        from .background import BackgroundTasks

        ctx.background = BackgroundTasks()
    return ctx.background


def solve_sync(plan: Plan, request: Any, ctx: Ctx) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for f in plan.fields:
        try:
            if f.get is not None:
                kwargs[f.name] = f.get(request)
            elif f.source == "depends":
                kwargs[f.name] = _dep_sync(f, request, ctx)
            else:
                kwargs[f.name] = _background(ctx)
        except _Errors as e:
            ctx.errors.extend(e.errors)
    return kwargs


def _dep_sync(f: Field, request: Any, ctx: Ctx) -> Any:
    target, plan = _target(f, ctx)
    if plan is None:
        return target
    use_cache = f.dep.use_cache  # type: ignore[union-attr]
    if use_cache and target in ctx.cache:
        return ctx.cache[target]
    if plan.is_async:
        raise TypeError(
            f"dependency {getattr(target, '__name__', target)!r} is async but its endpoint was compiled as sync "
            "(an override changed it after start-up?)"
        )
    n = len(ctx.errors)
    kwargs = solve_sync(plan, request, ctx)
    if len(ctx.errors) > n:
        return None
    if plan.kind == "gen":
        gen = _call(plan, kwargs)
        value = next(gen)
        ctx.exits.append(gen)
    else:
        value = _call(plan, kwargs)
    if use_cache:
        ctx.cache[target] = value
    return value


async def solve_async(plan: Plan, request: Any, ctx: Ctx) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for f in plan.fields:
        try:
            if f.get is not None:
                kwargs[f.name] = f.get(request)
            elif f.source == "depends":
                kwargs[f.name] = await _dep_async(f, request, ctx)
            else:
                kwargs[f.name] = _background(ctx)
        except _Errors as e:
            ctx.errors.extend(e.errors)
    return kwargs


async def _dep_async(f: Field, request: Any, ctx: Ctx) -> Any:
    target, plan = _target(f, ctx)
    if plan is None:
        return target
    use_cache = f.dep.use_cache  # type: ignore[union-attr]
    if use_cache and target in ctx.cache:
        return ctx.cache[target]
    n = len(ctx.errors)
    kwargs = await solve_async(plan, request, ctx)
    if len(ctx.errors) > n:
        return None
    kind = plan.kind
    if kind == "agen":
        agen = _call(plan, kwargs)
        value = await agen.__anext__()
        ctx.exits.append(agen)
    elif kind == "gen":
        gen = _call(plan, kwargs)
        value = next(gen)
        ctx.exits.append(gen)
    else:
        value = _call(plan, kwargs)
        if kind == "async" or inspect.isawaitable(value):
            value = await value
    if use_cache:
        ctx.cache[target] = value
    return value


async def teardown(exits: list[Any], exc: BaseException | None) -> None:
    """Run the code after ``yield`` of each generator dependency, innermost first. The
    handler's exception (if any) is thrown into it, so ``except``/``finally`` blocks see it."""
    for gen in reversed(exits):
        is_async = hasattr(gen, "__anext__")
        try:
            if exc is None:
                if is_async:
                    await gen.__anext__()
                else:
                    next(gen)
            elif is_async:
                await gen.athrow(exc)
            else:
                gen.throw(exc)
        except (StopIteration, StopAsyncIteration):
            continue
        except BaseException as e:  # noqa: BLE001 - a failing teardown must not stop the others
            if e is exc:
                continue
            log.error("dependency teardown failed", exc_info=(type(e), e, e.__traceback__))
            continue
        log.error("dependency %r yielded more than once", getattr(gen, "__name__", gen))


# ---- endpoints ----------------------------------------------------------------------------


def _guard_fields(app: App, guards: list[Any], path_params: tuple[str, ...]) -> tuple[list[Any], list[Field]]:
    """Split a route's guards into plain callables and ``Depends`` guards (resolved like parameters)."""
    plain, deps = [], []
    for i, g in enumerate(guards):
        if isinstance(g, Depends):
            f = Field(f"__guard{i}", "depends", "", None, None, True, EMPTY, dep=g)
            f.dep_plan = _dep_plan(app, g.dependency, path_params, True)
            deps.append(f)
        else:
            plain.append(g)
    return plain, deps


def _check_guards(values: list[Any]) -> None:
    from .guards import ForbiddenError

    for v in values:
        if v is False:
            raise ForbiddenError("access denied")


def runs_off_loop(app: App, route: RouteDef, path_params: list[str]) -> bool:
    """Whether the route's endpoint may run on an I/O thread (see ``_runtime.inline_mode``): a
    plain ``def`` handler whose parameters and guards are sync and need no per-request context
    (``Depends``, background tasks and teardowns run on the loop)."""
    pp = tuple(path_params)
    guards, guard_deps = _guard_fields(app, list(route.guards), pp)
    if guard_deps or any(inspect.iscoroutinefunction(g) for g in guards):
        return False
    plan = analyze(app, route.handler, pp)
    return plan.kind == "sync" and not plan.needs_ctx


def compile_route(app: App, route: RouteDef, path_params: list[str]) -> Callable[[Any], Any]:
    from . import background, response_model

    handler = route.handler
    pp = tuple(path_params)
    guards, guard_deps = _guard_fields(app, list(route.guards), pp)
    plan = analyze(app, handler, pp)
    post = response_model.serializer(route, handler)
    fields = plan.fields

    # The hot path: a handler that takes only ``request`` (or nothing) is called directly.
    if not guards and not guard_deps and post is None and not plan.positional:
        if len(fields) == 1 and fields[0].source == "request" and fields[0].name in _first_param(handler):
            return handler
        if not fields:
            return lambda request: handler()

    # An async-generator handler is a streaming response, not something to await.
    is_async = plan.kind == "async" or any(_field_async(app, f, pp) for f in (*fields, *guard_deps) if f.dep)
    needs_ctx = plan.needs_ctx or bool(guard_deps)
    guard_plan = Plan(None, guard_deps, "sync") if guard_deps else None
    name = getattr(handler, "__name__", "endpoint")

    if not needs_ctx and not is_async:
        getters = plan.getters

        def simple(request: Any) -> Any:
            if guards:
                _run_guards(guards, request)
            kwargs = {}
            errors = None
            for key, get in getters:
                try:
                    kwargs[key] = get(request)
                except _Errors as e:
                    errors = (errors or []) + e.errors
            if errors:
                raise RequestValidationError(errors)
            result = _call(plan, kwargs)
            return post(result) if post is not None else result

        simple.__name__ = name
        return simple

    if not is_async:

        def endpoint(request: Any) -> Any:
            if guards:
                _run_guards(guards, request)
            ctx = Ctx(app, pp)
            try:
                if guard_plan is not None:
                    _check_guards(list(solve_sync(guard_plan, request, ctx).values()))
                kwargs = solve_sync(plan, request, ctx)
                if ctx.errors:
                    raise RequestValidationError(ctx.errors)
                result = _call(plan, kwargs)
                if post is not None:
                    result = post(result)
            except BaseException as e:
                if ctx.exits:
                    background.after_response(app, ctx.exits, None, e)
                raise
            if ctx.exits or ctx.background is not None:
                background.after_response(app, ctx.exits, ctx.background, None)
            return result

        endpoint.__name__ = name
        return endpoint

    handler_kind = plan.kind

    async def async_endpoint(request: Any) -> Any:
        if guards:
            _run_guards(guards, request)
        ctx = Ctx(app, pp)
        try:
            if guard_plan is not None:
                _check_guards(list((await solve_async(guard_plan, request, ctx)).values()))
            kwargs = await solve_async(plan, request, ctx)
            if ctx.errors:
                raise RequestValidationError(ctx.errors)
            result = _call(plan, kwargs)
            if handler_kind == "async" or inspect.isawaitable(result):
                result = await result
            if post is not None:
                result = post(result)
        except BaseException as e:
            if ctx.exits:
                background.after_response(app, ctx.exits, None, e)
            raise
        if ctx.exits or ctx.background is not None:
            background.after_response(app, ctx.exits, ctx.background, None)
        return result

    async_endpoint.__name__ = name
    return async_endpoint


def compile_websocket(app: App, route: RouteDef, path_params: list[str]) -> Callable[[Any], Any]:
    """The endpoint of a WebSocket route. Guards, ``Depends`` and typed parameters resolve
    against the upgrade request before the handler runs, so a refusal is an HTTP answer
    (401/403/422, problem+json) and no connection is opened. The handler then gets a
    ``WebSocket`` (async) or a ``SyncWebSocket`` (sync, on its own thread, accepted before it
    runs). Returning without accepting refuses with 403; an exception after accepting closes
    with 1011; returning closes with 1000."""
    from .errors import HTTPException
    from .websocket import SyncWebSocket, WebSocket, WebSocketDisconnect, run_in_thread

    handler = route.handler
    pp = tuple(path_params)
    guards, guard_deps = _guard_fields(app, list(route.guards), pp)
    plan = analyze(app, handler, pp, websocket=True)
    guard_plan = Plan(None, guard_deps, "sync") if guard_deps else None
    is_sync = plan.kind == "sync"
    name = getattr(handler, "__name__", "websocket")
    offered_choice = list(getattr(route, "subprotocols", None) or [])

    async def ws_endpoint(request: Any) -> Any:
        conn = request._websocket()
        if conn is None:
            raise HTTPException(426, "this route speaks WebSocket")
        ws = (SyncWebSocket if is_sync else WebSocket)(conn, request)
        if guards:
            _run_guards(guards, ws)
        ctx = Ctx(app, pp)
        error: BaseException | None = None
        try:
            if guard_plan is not None:
                _check_guards(list((await solve_async(guard_plan, ws, ctx)).values()))
            kwargs = await solve_async(plan, ws, ctx)
            if ctx.errors:
                raise RequestValidationError(ctx.errors)
            if is_sync:
                # The published sync style never calls accept(): the route's preferred
                # subprotocol (if the client offered one) is chosen here.
                chosen = next((p for p in offered_choice if p in ws.subprotocols), None)
                ws.accept(chosen)
                await run_in_thread(_run_sync, plan, kwargs, ws, name)
            else:
                result = _call(plan, kwargs)
                if inspect.isawaitable(result):
                    await result
        except WebSocketDisconnect as e:
            error = e  # the peer left: nothing to report
        except BaseException as e:
            error = e
            if not ws.accepted:
                if ctx.exits:
                    await teardown(ctx.exits, e)
                raise  # guards, validation, dependencies: an HTTP answer
            if not isinstance(e, asyncio.CancelledError):
                log.error("WebSocket handler %s failed", name, exc_info=(type(e), e, e.__traceback__))
                await _close_quietly(ws, 1011, "internal error")
            elif not ws.closed:
                await _close_quietly(ws, 1001, "")
        finally:
            if ws.accepted and error is None and not is_sync:
                await _close_quietly(ws, 1000, "")
        if ctx.exits:
            await teardown(ctx.exits, error)
        if not ws.accepted:
            raise HTTPException(403, "the WebSocket handler did not accept the connection")
        if isinstance(error, asyncio.CancelledError):
            raise error
        return None

    ws_endpoint.__name__ = name
    return ws_endpoint


def _run_sync(plan: Plan, kwargs: dict[str, Any], ws: Any, name: str) -> None:
    """A sync handler on its thread; it closes the connection itself (never the loop, which
    must not block on a full send queue)."""
    from .websocket import WebSocketDisconnect

    try:
        _call(plan, kwargs)
    except WebSocketDisconnect:
        return
    except Exception as e:  # noqa: BLE001 - logged, and the peer learns with 1011
        log.error("WebSocket handler %s failed", name, exc_info=(type(e), e, e.__traceback__))
        _close_sync(ws, 1011, "internal error")
        return
    _close_sync(ws, 1000, "")


def _close_sync(ws: Any, code: int, reason: str) -> None:
    try:
        ws.close(code, reason)
    except Exception:  # noqa: BLE001 - the connection is gone already
        pass


async def _close_quietly(ws: Any, code: int, reason: str) -> None:
    if ws.closed:
        return
    try:
        result = ws.close(code, reason)
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 - the connection is gone already
        pass


def _first_param(handler: Any) -> tuple[str, ...]:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return ()
    # A keyword-only ``request`` cannot be passed positionally by the runtime.
    return tuple(p.name for p in params[:1] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


__all__ = ["Depends", "Plan", "analyze", "compile_route", "compile_websocket"]
