"""Typed-parameter markers and the compilation of a handler into an endpoint.

``compile_endpoint`` inspects a handler once, at start-up. A handler taking only ``request``
(or nothing) gets no wrapper at all, so the hot path is a direct call. Otherwise the signature
becomes a ``Plan`` (``di.py``): one getter per parameter — ``request``; path parameters by
name; ``Query() Path() Header() Cookie() Body() Form() File()`` markers; pydantic models and
dataclasses from the JSON body; ``Depends``; ``BackgroundTasks``; other scalars from the
query. Every validation failure is collected into one 422 problem+json (``errors`` with
``loc``, ``msg``, ``type``, like FastAPI).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._coerce import EMPTY
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


class Param:
    """Where a parameter comes from, its default, alias and constraints (pydantic-style)."""

    source = "query"

    def __init__(
        self,
        default: Any = EMPTY,
        *,
        default_factory: Callable[[], Any] | None = None,
        alias: str | None = None,
        title: str | None = None,
        description: str | None = None,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        regex: str | None = None,
        examples: list[Any] | None = None,
        example: Any = EMPTY,
        deprecated: bool | None = None,
        include_in_schema: bool = True,
        embed: bool | None = None,
        media_type: str | None = None,
        convert_underscores: bool = True,
    ) -> None:
        # ``Query(...)`` is FastAPI's spelling of "required".
        self.default = EMPTY if default is Ellipsis else default
        self.default_factory = default_factory
        self.alias = alias
        self.title = title
        self.description = description
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le
        self.min_length, self.max_length = min_length, max_length
        self.pattern = pattern or regex
        self.examples = examples if examples is not None else ([] if example is EMPTY else [example])
        self.deprecated = deprecated
        self.include_in_schema = include_in_schema
        self.embed = embed
        self.media_type = media_type
        self.convert_underscores = convert_underscores

    @property
    def required(self) -> bool:
        return self.default is EMPTY and self.default_factory is None

    def get_default(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'' if self.required else repr(self.default)})"


class Query(Param):
    """A query-string parameter (``list[X]`` collects repeated keys)."""

    source = "query"


class Path(Param):
    """A path parameter (named like the ``{param}`` in the route)."""

    source = "path"


class Header(Param):
    """A request header; ``x_user`` reads ``X-User`` unless ``convert_underscores=False``."""

    source = "header"


class Cookie(Param):
    """A cookie by name."""

    source = "cookie"


class Body(Param):
    """The JSON body, or one key of it (``embed=True``, or when several body parameters exist)."""

    source = "body"


class Form(Param):
    """A form field (urlencoded or multipart)."""

    source = "form"


class File(Param):
    """A multipart file part (``UploadedFile``, or ``bytes`` for its content)."""

    source = "file"


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
    from . import di

    return di.compile_route(app, route, path_params)


__all__ = ["Body", "Cookie", "File", "Form", "Header", "Param", "Path", "Query", "RequestValidationError"]
