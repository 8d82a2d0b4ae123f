"""Response models: validate and serialise a handler's result, and the default status code.

``response_model=`` on the route (or a model/dataclass return annotation) turns the result
into exactly that type's JSON (extra fields dropped, aliases applied). A result that does not
fit is a server bug: ``ResponseValidationError``, a 500 with the details in the log.
``status_code=`` is the status of a plain result; a ``Response`` or a ``(body, status)``
tuple keeps its own.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _coerce

if TYPE_CHECKING:
    from .routing import RouteDef


class ResponseValidationError(Exception):
    """The handler returned something that does not match its response model."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"response does not match the response model: {errors}")
        self.errors = errors


def model_of(route: RouteDef, handler: Any) -> Any:
    """The response model: the route's ``response_model`` or a model-like return annotation."""
    explicit = getattr(route, "response_model", None)
    if explicit is not None:
        return explicit
    try:
        ann = typing.get_type_hints(handler).get("return")
    except Exception:  # noqa: BLE001 - unresolvable annotations: no model
        return None
    if ann is None or ann is inspect.Parameter.empty:
        return None
    base, _ = _coerce.unwrap_optional(ann)
    if base is dict or typing.get_origin(base) is dict:
        return None
    return ann if _coerce.is_body_type(ann) else None


def serializer(route: RouteDef, handler: Any) -> Callable[[Any], Any] | None:
    model = model_of(route, handler)
    status = getattr(route, "status_code", None)
    if model is None and status is None:
        return None
    dump: Callable[[Any], Any] | None = None
    if model is not None:
        try:
            from pydantic import TypeAdapter, ValidationError
        except ImportError:
            if getattr(route, "response_model", None) is not None:
                raise RuntimeError("response_model= needs pydantic (pip install pydantic)") from None
            # A model-like return annotation without pydantic: the result is sent as it is.
            return serializer_status_only(status)
        adapter = TypeAdapter(model)

        def dump(result: Any) -> Any:
            try:
                value = adapter.validate_python(result, from_attributes=True)
            except ValidationError as e:
                raise ResponseValidationError(e.errors(include_url=False, include_context=False)) from None
            return adapter.dump_python(value, mode="json", by_alias=True)

    from .responses import Response

    def post(result: Any) -> Any:
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            if dump is not None and result:
                return (dump(result[0]), *result[1:])
            return result
        if dump is not None:
            result = dump(result)
        if status == 204 and result is None:
            return Response.no_content()
        return (result, status) if status is not None else result

    return post


def serializer_status_only(status: int | None) -> Callable[[Any], Any] | None:
    if status is None:
        return None
    from .responses import Response

    def post(result: Any) -> Any:
        if isinstance(result, (Response, tuple)):
            return result
        if status == 204 and result is None:
            return Response.no_content()
        return result, status

    return post


__all__ = ["ResponseValidationError", "model_of", "serializer"]
