"""Compile a handler into an endpoint ``endpoint(request) -> result``.

Inspection happens once at start-up. A handler taking only ``request`` (or
nothing) gets no wrapper at all, so the hot path is a direct call. Otherwise the
wrapper resolves each parameter: ``request``; path parameters by name (converted
by annotation); pydantic models from the JSON body; everything else from the
query string. Conversion failures are 422 problem+json with field errors.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_type_hints

from .errors import HTTPException

if TYPE_CHECKING:
    from .app import App
    from .routing import RouteDef


class RequestValidationError(HTTPException):
    """422 with a list of field errors (``errors`` in the problem document)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(422, "the request is not valid")
        self.errors = errors
        self.extra = {"errors": errors}


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_fields")


def _convert(value: str, tp: Any) -> Any:
    if tp in (inspect.Parameter.empty, str, Any):
        return value
    if tp is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if tp is uuid.UUID:
        return uuid.UUID(value)
    if tp in (int, float):
        return tp(value)
    return tp(value)


def _run_guards(guards: list[Any], request: Any) -> None:
    from .guards import ForbiddenError

    for guard in guards:
        allowed = guard(request)
        if inspect.isawaitable(allowed):
            close = getattr(allowed, "close", None)
            if close is not None:
                close()
            raise TypeError(f"guard {guard!r} is async; guards must be synchronous callables")
        if not allowed:
            raise ForbiddenError("access denied")


def compile_endpoint(app: App, route: RouteDef, path_params: list[str]) -> Callable[[Any], Any]:
    handler = route.handler
    guards = list(route.guards)
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        sig = None
    params = list(sig.parameters.values()) if sig else []
    try:
        hints = get_type_hints(handler)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the raw ones
        hints = {}

    from ._cello import Request

    def is_request(p: inspect.Parameter) -> bool:
        ann = hints.get(p.name, p.annotation)
        return (
            p.name in ("request", "req")
            or ann is Request
            or (len(params) == 1 and p.name not in path_params and ann is inspect.Parameter.empty)
        )

    plain = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not guards and len(plain) == 1 and is_request(plain[0]) and plain[0].kind != p_kw_only():
        return handler
    if not guards and not plain:
        return lambda request: handler()

    getters: list[tuple[str, Callable[[Any], Any]]] = []
    for p in plain:
        ann = hints.get(p.name, p.annotation)
        if is_request(p):
            getters.append((p.name, lambda r: r))
        elif p.name in path_params:
            getters.append((p.name, _path_getter(p.name, ann)))
        elif _is_model(ann):
            getters.append((p.name, _body_getter(p.name, ann)))
        else:
            getters.append((p.name, _query_getter(p.name, ann, p.default)))

    def endpoint(request: Any) -> Any:
        if guards:
            _run_guards(guards, request)
        kwargs = {}
        errors = []
        for name, get in getters:
            try:
                kwargs[name] = get(request)
            except RequestValidationError as e:
                errors.extend(e.errors)
        if errors:
            raise RequestValidationError(errors)
        return handler(**kwargs)

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint


def p_kw_only() -> Any:
    return inspect.Parameter.KEYWORD_ONLY


def _path_getter(name: str, ann: Any) -> Callable[[Any], Any]:
    def get(request: Any) -> Any:
        raw = request.params[name]
        try:
            return _convert(raw, ann)
        except (TypeError, ValueError) as e:
            raise RequestValidationError([{"loc": ["path", name], "msg": str(e), "type": "value_error"}]) from None

    return get


def _query_getter(name: str, ann: Any, default: Any) -> Callable[[Any], Any]:
    def get(request: Any) -> Any:
        raw = request.query.get(name)
        if raw is None:
            if default is inspect.Parameter.empty:
                raise RequestValidationError([{"loc": ["query", name], "msg": "field required", "type": "missing"}])
            return default
        try:
            return _convert(raw, ann)
        except (TypeError, ValueError) as e:
            raise RequestValidationError([{"loc": ["query", name], "msg": str(e), "type": "value_error"}]) from None

    return get


def _body_getter(name: str, model: Any) -> Callable[[Any], Any]:
    def get(request: Any) -> Any:
        data = request.json()
        try:
            return model.model_validate(data)
        except Exception as e:
            errs = getattr(e, "errors", None)
            if errs is None:
                raise
            raise RequestValidationError(
                [
                    {"loc": ["body", *map(str, err.get("loc", ()))], "msg": err.get("msg"), "type": err.get("type")}
                    for err in errs()
                ]
            ) from None

    return get
