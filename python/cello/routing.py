"""Route registration shared by ``App`` and ``Blueprint``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Handler = Callable[..., Any]


@dataclass
class RouteDef:
    """A route as registered, before prefixes are applied and handlers compiled."""

    methods: list[str]
    path: str
    handler: Handler
    name: str
    guards: list[Any] = field(default_factory=list)
    blocking: bool = False
    tags: list[str] | None = None
    summary: str | None = None
    description: str | None = None
    # Developer-API options (response models, OpenAPI).
    response_model: Any = None
    status_code: int | None = None
    operation_id: str | None = None
    include_in_schema: bool = True
    deprecated: bool = False
    responses: dict[Any, Any] | None = None
    # WebSocket routes (``@app.websocket``): a GET upgrade, never in the OpenAPI document.
    websocket: bool = False
    subprotocols: list[str] | None = None
    # The route's own body limit in bytes (``limits.max_body_size`` when None).
    max_body_size: int | None = None
    # The route's own rate limit (a RateLimitConfig), counted in the data plane.
    rate_limit: Any = None


def join_paths(prefix: str, path: str) -> str:
    prefix = prefix.rstrip("/")
    if not path.startswith("/"):
        path = "/" + path
    joined = prefix + path
    if len(joined) > 1 and joined.endswith("/") and not path.endswith("/"):
        joined = joined.rstrip("/")
    return joined or "/"


class Routes:
    """Decorators for registering routes; ``App`` and ``Blueprint`` build on it."""

    def __init__(self, prefix: str = "") -> None:
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix.rstrip("/")
        self._routes: list[RouteDef] = []
        self._children: list[Routes] = []
        self._guards: list[Any] = []

    def route(
        self,
        path: str,
        methods: Sequence[str] | None = None,
        *,
        name: str | None = None,
        guards: Sequence[Any] | None = None,
        blocking: bool = False,
        tags: list[str] | None = None,
        summary: str | None = None,
        description: str | None = None,
        response_model: Any = None,
        status_code: int | None = None,
        operation_id: str | None = None,
        include_in_schema: bool = True,
        deprecated: bool = False,
        responses: dict[Any, Any] | None = None,
        max_body_size: int | None = None,
        rate_limit: Any = None,
    ) -> Callable[[Handler], Handler]:
        """Register ``handler`` for ``methods`` (default ``["GET"]``) on ``path``;
        ``max_body_size`` (bytes) replaces the app's body limit for this route (413 beyond it,
        checked while the body is read)."""
        methods = [m.upper() for m in (methods or ["GET"])]
        if max_body_size is not None and (isinstance(max_body_size, bool) or int(max_body_size) < 0):
            raise ValueError(f"max_body_size must be a non-negative int, got {max_body_size!r}")
        if rate_limit is not None:
            from .config import RateLimitConfig

            if not isinstance(rate_limit, RateLimitConfig):
                raise TypeError(f"rate_limit= takes a RateLimitConfig, not {type(rate_limit).__name__}")

        def decorator(handler: Handler) -> Handler:
            self._routes.append(
                RouteDef(
                    methods=methods,
                    path=path,
                    handler=handler,
                    name=name or getattr(handler, "__name__", path),
                    guards=list(guards or []),
                    blocking=blocking,
                    tags=tags,
                    summary=summary,
                    description=description,
                    response_model=response_model,
                    status_code=status_code,
                    operation_id=operation_id,
                    include_in_schema=include_in_schema,
                    deprecated=deprecated,
                    responses=responses,
                    max_body_size=None if max_body_size is None else int(max_body_size),
                    rate_limit=rate_limit,
                )
            )
            return handler

        return decorator

    def _method(self, method: str, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route(path, [method], **kw)

    def get(self, path: str, tags=None, summary=None, description=None, guards=None, blocking=False, name=None, **kw):
        return self._method("GET", path, tags=tags, summary=summary, description=description, guards=guards,
                            blocking=blocking, name=name, **kw)  # fmt: skip

    def post(self, path: str, tags=None, summary=None, description=None, guards=None, blocking=False, name=None, **kw):
        return self._method("POST", path, tags=tags, summary=summary, description=description, guards=guards,
                            blocking=blocking, name=name, **kw)  # fmt: skip

    def put(self, path: str, tags=None, summary=None, description=None, guards=None, blocking=False, name=None, **kw):
        return self._method("PUT", path, tags=tags, summary=summary, description=description, guards=guards,
                            blocking=blocking, name=name, **kw)  # fmt: skip

    def delete(
        self, path: str, tags=None, summary=None, description=None, guards=None, blocking=False, name=None, **kw
    ):
        return self._method("DELETE", path, tags=tags, summary=summary, description=description, guards=guards,
                            blocking=blocking, name=name, **kw)  # fmt: skip

    def patch(self, path: str, tags=None, summary=None, description=None, guards=None, blocking=False, name=None, **kw):
        return self._method("PATCH", path, tags=tags, summary=summary, description=description, guards=guards,
                            blocking=blocking, name=name, **kw)  # fmt: skip

    def options(self, path: str, guards=None, name=None, **kw):
        return self._method("OPTIONS", path, guards=guards, name=name, **kw)

    def head(self, path: str, guards=None, name=None, **kw):
        return self._method("HEAD", path, guards=guards, name=name, **kw)

    def websocket(
        self,
        path: str,
        *,
        name: str | None = None,
        guards: Sequence[Any] | None = None,
        subprotocols: Sequence[str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a WebSocket handler: ``async def h(ws)`` (``await ws.accept()``, ...) or a
        sync ``def h(ws)`` (run on its own thread; ``ws.recv()`` is ``None`` once closed). Path
        parameters, guards and ``Depends`` apply to the upgrade request. ``subprotocols``: the
        ones a sync handler accepts, in the server's order of preference."""

        def decorator(handler: Handler) -> Handler:
            self._routes.append(
                RouteDef(
                    methods=["GET"],
                    path=path,
                    handler=handler,
                    name=name or getattr(handler, "__name__", path),
                    guards=list(guards or []),
                    include_in_schema=False,
                    websocket=True,
                    subprotocols=list(subprotocols) if subprotocols else None,
                )
            )
            return handler

        return decorator

    def register_blueprint(self, blueprint: Routes) -> None:
        """Mount ``blueprint`` (and its nested blueprints) under this one's prefix."""
        if blueprint is self:
            raise ValueError("a blueprint cannot be registered on itself")
        self._children.append(blueprint)

    def add_guard(self, guard: Any) -> None:
        """A guard that runs before every handler registered here (and in children)."""
        self._guards.append(guard)

    def _flatten(self, prefix: str = "", guards: Sequence[Any] = ()) -> list[RouteDef]:
        base = join_paths(prefix, self.prefix) if self.prefix else (prefix or "")
        inherited = [*guards, *self._guards]
        out = []
        for r in self._routes:
            path = join_paths(base, r.path) if base else r.path
            out.append(replace(r, path=path, guards=[*inherited, *r.guards]))
        for child in self._children:
            out.extend(child._flatten(base, inherited))
        return out


class Blueprint(Routes):
    """A group of routes under a common prefix; blueprints nest."""

    def __init__(self, prefix: str = "", name: str | None = None) -> None:
        super().__init__(prefix)
        self.name = name or (prefix.strip("/") or "blueprint")

    def register(self, blueprint: Blueprint) -> None:
        """Nest ``blueprint`` under this one (the published 1.x name of ``register_blueprint``)."""
        self.register_blueprint(blueprint)

    def get_all_routes(self) -> list[tuple[str, str, Handler]]:
        """Every route of this blueprint and its nested ones as ``(method, path, handler)``, one
        tuple per method, in registration order (as 1.x returned them). ``path`` includes this
        blueprint's prefix and its children's, not the prefix of whatever it is mounted on."""
        return [(method, r.path, r.handler) for r in self._flatten() for method in r.methods]
