"""Templates: Jinja2 syntax rendered in Rust by minijinja.

``MiniJinjaEngine(template_dir)`` loads templates from a directory (inheritance, includes,
imports and macros resolve there); ``.html``/``.htm``/``.xml`` templates and string templates
are HTML-escaped unless ``auto_escape=False``. ``App.enable_templates`` makes one for the app
with ``url_for`` and ``csrf_token`` as globals; ``Response.template`` renders with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ._cello import TemplateError, TemplateNotFound, Templates

_default: MiniJinjaEngine | None = None


class TemplateEngine:
    """What a template engine offers Cello: ``render(name, context)`` and
    ``render_string(source, context)``, both returning ``str``. Subclass it to plug in
    another engine; ``MiniJinjaEngine`` is the built-in one."""

    def render(self, name: str, context: Mapping[str, Any] | None = None) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not implement render()")

    def render_string(self, source: str, context: Mapping[str, Any] | None = None) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not implement render_string()")


class MiniJinjaEngine(TemplateEngine):
    """Jinja2-syntax templates from ``template_dir`` (relative to the working directory).

    ``globals`` are visible in every template (values or functions). ``reload=True`` re-reads
    templates on every render; ``None`` (what ``App.enable_templates`` passes) reloads while
    the app runs in debug/development mode.
    """

    def __init__(
        self,
        template_dir: str | os.PathLike[str] | None = "templates",
        auto_escape: bool = True,
        globals: Mapping[str, Any] | None = None,
        reload: bool | None = False,
    ) -> None:
        self.template_dir = None if template_dir is None else os.path.abspath(os.fspath(template_dir))
        self.auto_escape = bool(auto_escape)
        self._env = Templates(self.template_dir, self.auto_escape)
        self._reload_when: Callable[[], bool] | None = None
        self.reload = reload
        for name, value in (globals or {}).items():
            self.add_global(name, value)

    @property
    def reload(self) -> bool | None:
        return self._reload

    @reload.setter
    def reload(self, value: bool | None) -> None:
        self._reload = value
        self._env.reload = bool(value)

    def add_global(self, name: str, value: Any) -> None:
        self._env.add_global(str(name), value)

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        """``{{ value | name(arg) }}`` calls ``func(value, arg)``."""
        if not callable(func):
            raise TypeError(f"a filter must be callable, got {func!r}")
        self._env.add_filter(str(name), func)

    def render(self, name: str, context: Mapping[str, Any] | None = None) -> str:
        if self._reload is None and self._reload_when is not None:
            self._env.reload = bool(self._reload_when())
        try:
            return self._env.render(name, _dict(context))
        except TemplateNotFound as e:
            raise TemplateNotFound(f"{e} (looked in {self.template_dir})") from None

    def render_string(self, source: str, context: Mapping[str, Any] | None = None) -> str:
        return self._env.render_string(source, _dict(context))

    def __repr__(self) -> str:
        return f"MiniJinjaEngine({self.template_dir!r}, auto_escape={self.auto_escape})"


def _dict(context: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if context is None or type(context) is dict:
        return context  # type: ignore[return-value]
    return dict(context)


def csrf_token(request: Any = None) -> str:
    """``{{ csrf_token() }}``: the token the CSRF layer put in ``request.context``; the
    template context must hold the ``request``."""
    token = None
    if request is not None:
        token = request.context.get("csrf_token")
    if token is None:
        raise TemplateError("csrf_token() needs the CSRF layer (app.enable_csrf) and `request` in the template context")
    return str(token)


csrf_token.__cello_pass_request__ = True  # type: ignore[attr-defined]


def default_engine() -> MiniJinjaEngine:
    if _default is None:
        raise RuntimeError("no template engine: call app.enable_templates() first")
    return _default


def enable(app: Any, template_dir: Any, auto_escape: bool, globals: Mapping[str, Any] | None,
           reload: bool | None) -> MiniJinjaEngine:  # fmt: skip
    global _default
    engine = MiniJinjaEngine(template_dir, auto_escape, None, reload)
    engine.add_global("url_for", app.url_for)
    engine.add_global("csrf_token", csrf_token)
    for name, value in (globals or {}).items():
        engine.add_global(name, value)

    def debug() -> bool:
        from .background import runner

        hooks = runner(app).hooks
        return bool(getattr(hooks, "debug", False))

    engine._reload_when = debug
    _default = engine
    return engine


__all__ = ["MiniJinjaEngine", "TemplateEngine", "TemplateError", "TemplateNotFound", "csrf_token"]
