"""Static files, the response cache and the circuit breaker: ``App`` methods whose work is
done in Rust (``cello_config`` sections ``staticFiles``, ``cache``, ``circuitBreaker``).

``@cache(ttl=None, tags=None)`` marks a handler; ``App.server_config()`` turns the marks into
``cache.routes`` entries keyed by the route template, so a hit never reaches Python.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .config import StaticFilesConfig

_MARK = "__cello_cache__"


def _tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    if not isinstance(tags, Iterable):
        raise TypeError(f"tags must be a str or a list of str, not {type(tags).__name__}")
    out = []
    for t in tags:
        if not isinstance(t, str):
            raise TypeError(f"tags must be str, not {type(t).__name__}")
        out.append(t)
    return out


def _ttl(ttl: Any, name: str = "ttl") -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(ttl).__name__}")
    if ttl < 1:
        raise ValueError(f"{name} must be at least 1 second, got {ttl}")
    return int(ttl)


def cache(ttl: int | None = None, tags: list[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache this route's responses in Rust (``ttl`` seconds, default the ``enable_caching``
    TTL); ``tags`` name it for ``app.invalidate_cache(tags)``. Works above or below the route
    decorator. Without ``app.enable_caching()`` only routes marked with ``@cache`` are cached."""
    mark = {"ttl": _ttl(ttl), "tags": _tags(tags)}

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        setattr(handler, _MARK, mark)
        return handler

    return decorate


class EdgeMixin:
    """``enable_static_files``, ``enable_caching``, ``invalidate_cache``, ``enable_circuit_breaker``."""

    def enable_static_files(self, config: StaticFilesConfig) -> None:
        """Serve ``config.root`` at ``config.prefix`` from Rust, on the I/O thread (no GIL).
        Call it once per directory; mounts may not share a prefix."""
        from ._cello import validate_config

        if not isinstance(config, StaticFilesConfig):
            raise TypeError(f"enable_static_files() takes a StaticFilesConfig, not {type(config).__name__}")
        mount = config._to_config()
        mount["root"] = os.path.abspath(os.fspath(mount["root"]))
        if not os.path.isdir(mount["root"]):
            raise ValueError(f"StaticFilesConfig.root: {mount['root']!r} is not a directory")
        mounts = [*self.__dict__.get("_static_mounts", []), mount]
        validate_config(json.dumps({"staticFiles": mounts}))
        self._static_mounts = mounts

    def enable_caching(
        self, ttl: int = 300, methods: list[str] | None = None, exclude_paths: list[str] | None = None
    ) -> None:
        """Cache complete responses in memory (per worker, moka) for ``ttl`` seconds. ``methods``
        defaults to GET and HEAD; paths under an ``exclude_paths`` prefix are never cached."""
        from ._cello import validate_config

        cfg: dict[str, Any] = {"ttl": _ttl(ttl), "allRoutes": True}
        if methods is not None:
            cfg["methods"] = [str(m).upper() for m in _tags(methods)]
        if exclude_paths is not None:
            cfg["excludePaths"] = _tags(exclude_paths)
        validate_config(json.dumps({"cache": cfg}))
        self._cache_settings = cfg

    def invalidate_cache(self, tags: list[str] | str | None = None) -> int:
        """Drop this worker's cached responses of routes tagged with any of ``tags`` (every
        entry when ``tags`` is None); returns how many entries the cache held before."""
        names = _tags(tags)
        if tags is not None and not names:
            return 0
        total = 0
        for ex in list(self.__dict__.get("_live_executors", ())):
            core = getattr(ex, "core", None)
            if core is not None:
                total += core.invalidate_cache(names)
        return total

    def enable_circuit_breaker(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30,
        half_open_target: int = 3,
        failure_codes: list[int] | None = None,
    ) -> None:
        """One breaker per route template: after ``failure_threshold`` consecutive failures
        (5xx, or ``failure_codes``; exceptions (500) and timeouts (504) always count) the route
        answers 503 with ``Retry-After`` for ``reset_timeout`` seconds without calling Python;
        then ``half_open_target`` successful trial requests close it again."""
        from ._cello import validate_config

        for name, value in (("failure_threshold", failure_threshold), ("half_open_target", half_open_target)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if isinstance(reset_timeout, bool) or not isinstance(reset_timeout, (int, float)):
            raise TypeError(f"reset_timeout must be a number of seconds, not {type(reset_timeout).__name__}")
        codes = []
        for c in failure_codes or []:
            if isinstance(c, bool) or not isinstance(c, int):
                raise TypeError(f"failure_codes must be ints, not {type(c).__name__}")
            codes.append(c)
        cfg = {
            "failureThreshold": failure_threshold,
            "resetTimeout": float(reset_timeout),
            "halfOpenTarget": half_open_target,
            "failureCodes": codes,
        }
        validate_config(json.dumps({"circuitBreaker": cfg}))
        self._breaker_config = cfg

    def _track_executor(self, executor: Any) -> None:
        """A running Executor (server or TestClient), for ``invalidate_cache``."""
        live = self.__dict__.setdefault("_live_executors", weakref.WeakSet())
        live.add(executor)

    def _cache_config(self) -> dict[str, Any]:
        """Static mounts, cache and breaker sections, for ``server_config()``."""
        out: dict[str, Any] = {}
        mounts = self.__dict__.get("_static_mounts")
        if mounts:
            out["staticFiles"] = [dict(m) for m in mounts]
        routes = []
        for r in self._flatten():  # type: ignore[attr-defined]
            mark = getattr(r.handler, _MARK, None)
            if mark is not None:
                routes.append({"template": r.path, "ttl": mark["ttl"], "tags": list(mark["tags"])})
        base = self.__dict__.get("_cache_settings")
        if base is not None or routes:
            cfg = dict(base) if base is not None else {"allRoutes": False}
            cfg["routes"] = routes
            out["cache"] = cfg
        breaker = self.__dict__.get("_breaker_config")
        if breaker is not None:
            out["circuitBreaker"] = dict(breaker)
        return out


__all__ = ["EdgeMixin", "cache"]
