"""``App.enable_jwt`` / ``enable_api_key`` / ``enable_basic_auth`` / ``enable_rate_limit`` /
``enable_session`` / ``enable_csrf``: each validates its section at once and adds it to the
data-plane config, where a Rust layer of the one stack does the work (rejections never
reach Python)."""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import ConfigError
from .guards import UnauthorizedError

_MIN_SECRET = 32


def _default_secret(caller: str) -> None:
    """No ``secret=``: ``CELLO_SECRET_KEY`` must do. In production (``CELLO_ENV=production``)
    its absence is a startup error; in development a random key is exported to the
    environment (so worker processes share it) with a warning."""
    key = os.environ.get("CELLO_SECRET_KEY", "")
    if key:
        if len(key.encode()) < _MIN_SECRET:
            raise ConfigError(f"{caller}: CELLO_SECRET_KEY must be at least {_MIN_SECRET} bytes long")
        return
    if os.environ.get("CELLO_ENV", "development").strip().lower() in ("production", "prod"):
        raise ConfigError(
            f"{caller}: no secret; set CELLO_SECRET_KEY (at least {_MIN_SECRET} bytes) or pass secret= "
            "(a random key is only made outside production, CELLO_ENV=production)"
        )
    os.environ["CELLO_SECRET_KEY"] = secrets.token_urlsafe(48)
    warnings.warn(
        f"{caller}: CELLO_SECRET_KEY is not set; using a random key for this run "
        "(development only: sessions and CSRF tokens end when the server restarts)",
        RuntimeWarning,
        stacklevel=3,
    )


def _validate(section: str, cfg: dict[str, Any]) -> None:
    from ._cello import validate_config

    validate_config(json.dumps({section: cfg}))


def _wire(value: Any) -> Any:
    # bytes secrets travel as arrays of byte values (cello_config::Secret)
    return list(value) if isinstance(value, bytes) else value


def _paths(paths: Iterable[str] | None) -> list[str]:
    if isinstance(paths, str):
        raise TypeError("exclude_paths takes a list of paths, not a string")
    return [str(p) for p in (paths or [])]


class _BasicVerify:
    """The first guard of every route when ``enable_basic_auth(verify=...)``: the data plane
    refused missing or malformed credentials and left the rest to ``verify(user, password)``."""

    def __init__(self, verify: Callable[[str, str], Any]) -> None:
        self.verify = verify

    def __call__(self, request: Any) -> bool:
        pending = request._pending_basic() if hasattr(request, "_pending_basic") else None
        if pending is None:
            return True  # excluded path, or a configured user already matched in Rust
        user, password, realm = pending
        if self.verify(user, password):
            request.context["user"] = {"username": user}
            return True
        raise UnauthorizedError("invalid credentials", www_authenticate=f'Basic realm="{realm}", charset="UTF-8"')


class SecurityMixin:
    """The issue-11 switches of ``App`` (see ``docs/auth.md``)."""

    _security: dict[str, Any]
    _pre_guards: list[Any]

    def _security_init(self) -> None:
        self._security = {}
        self._pre_guards = []

    def enable_jwt(self, config: Any, exclude_paths: Iterable[str] | None = None) -> None:
        """Verify ``Bearer`` JWTs on every route (but ``exclude_paths`` and the probes);
        the claims become ``request.context["user"]``."""
        from .config import JwtConfig

        if not isinstance(config, JwtConfig):
            raise TypeError(f"enable_jwt() takes a JwtConfig, not {type(config).__name__}")
        cfg = {k: _wire(v) for k, v in config._to_config().items()}
        cfg["exclude_paths"] = [*(cfg.get("exclude_paths") or []), *_paths(exclude_paths)]
        _validate("jwt", cfg)
        self._security["jwt"] = cfg

    def enable_api_key(
        self,
        keys: Iterable[str] | Mapping[str, Any],
        header_name: str = "X-API-Key",
        query_param: str | None = None,
        exclude_paths: Iterable[str] | None = None,
    ) -> None:
        """Require one of ``keys`` (a list, or a dict key → identity put in
        ``request.context["user"]``) in ``header_name`` or the ``query_param``."""
        if isinstance(keys, str):
            raise TypeError("enable_api_key() takes a list or dict of keys, not a string")
        if isinstance(keys, Mapping):
            table = {str(k): v for k, v in keys.items()}
        else:
            table = {str(k): {"api_key": True} for k in keys}
        json.dumps(list(table.values()))  # identities must be JSON (they cross into Rust)
        cfg = {
            "keys": table,
            "header_name": str(header_name),
            "query_param": query_param,
            "exclude_paths": _paths(exclude_paths),
        }
        _validate("apiKey", cfg)
        self._security["apiKey"] = cfg

    def enable_basic_auth(
        self,
        users: Mapping[str, str] | None = None,
        verify: Callable[[str, str], Any] | None = None,
        realm: str = "cello",
        exclude_paths: Iterable[str] | None = None,
    ) -> None:
        """HTTP Basic: ``users`` maps user → password (plain, ``$argon2…`` or ``$2b$…``),
        or ``verify(user, password)`` decides; the user is ``request.context["user"]``."""
        if verify is not None and not callable(verify):
            raise TypeError("verify must be a callable verify(user, password) -> bool")
        cfg = {
            "users": {str(u): _wire(p) for u, p in (users or {}).items()},
            "realm": str(realm),
            "exclude_paths": _paths(exclude_paths),
            "python_verify": verify is not None,
        }
        _validate("basicAuth", cfg)
        self._security["basicAuth"] = cfg
        self._pre_guards = [g for g in self._pre_guards if not isinstance(g, _BasicVerify)]
        if verify is not None:
            self._pre_guards.insert(0, _BasicVerify(verify))

    def enable_rate_limit(self, config: Any = None) -> None:
        """Limit requests per ``key_by`` (429 with ``Retry-After`` and ``RateLimit-*``);
        routes may carry their own limit (``@app.get(..., rate_limit=RateLimitConfig(...))``)."""
        from .config import RateLimitConfig

        config = RateLimitConfig() if config is None else config
        if not isinstance(config, RateLimitConfig):
            raise TypeError(f"enable_rate_limit() takes a RateLimitConfig, not {type(config).__name__}")
        cfg = dict(config._to_config())
        _validate("rateLimit", cfg)
        self._security["rateLimit"] = cfg

    def enable_session(self, config: Any = None) -> None:
        """Sessions as ``request.session`` (dict-like; ``regenerate()`` at login, ``clear()``
        at logout), kept in a signed and encrypted cookie (``store="cookie"``), in memory or
        in Redis. The key is ``config.secret``, else ``CELLO_SECRET_KEY``; without either,
        production (``CELLO_ENV=production``) refuses to start and development makes a random
        key with a warning."""
        from .config import SessionConfig

        config = SessionConfig() if config is None else config
        if not isinstance(config, SessionConfig):
            raise TypeError(f"enable_session() takes a SessionConfig, not {type(config).__name__}")
        cfg = {k: _wire(v) for k, v in config._to_config().items()}
        if cfg.get("secret") is None:
            _default_secret("enable_session")
        _validate("session", cfg)
        self._security["session"] = cfg

    def enable_csrf(
        self,
        secret: str | bytes | None = None,
        cookie_name: str = "csrftoken",
        header_name: str = "X-CSRF-Token",
        form_field: str = "csrf_token",
        exempt_paths: Iterable[str] | None = None,
        trusted_origins: Iterable[str] | None = None,
    ) -> None:
        """CSRF protection: unsafe methods need the ``cookie_name`` token echoed in
        ``header_name`` or the ``form_field`` (403 otherwise); HTTPS requests also need an
        ``Origin``/``Referer`` of their own or one of ``trusted_origins``. The token is
        ``request.csrf_token()`` (and ``request.context["csrf_token"]``)."""
        if isinstance(trusted_origins, str):
            raise TypeError("trusted_origins takes a list of origins, not a string")
        if secret is None:
            _default_secret("enable_csrf")
        cfg = {
            "secret": _wire(secret),
            "cookie_name": str(cookie_name),
            "header_name": str(header_name),
            "form_field": str(form_field),
            "exempt_paths": _paths(exempt_paths),
            "trusted_origins": [str(o) for o in (trusted_origins or [])],
        }
        _validate("csrf", cfg)
        self._security["csrf"] = cfg

    def _security_config(self, routes: list[Any]) -> dict[str, Any]:
        """The sections for ``server_config``; per-route limits join the rate-limit section."""
        out = {k: dict(v) for k, v in self._security.items()}
        per_route = {}
        for r in routes:
            limit = getattr(r, "rate_limit", None)
            if limit is None:
                continue
            cfg = limit._to_config()
            per_route[r.path] = {
                "algorithm": cfg["algorithm"],
                "capacity": cfg["capacity"],
                "refill_rate": cfg["refill_rate"],
                "window_secs": cfg["window_secs"],
            }
        if per_route:
            section = out.setdefault("rateLimit", {"routes_only": True})
            section["routes"] = per_route
        return out


__all__ = ["SecurityMixin"]
