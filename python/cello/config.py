"""Configuration classes: views over the Rust types of ``cello-config``.

Nothing here declares a field, a default or a range. At import, ``_cello.config_kinds()``
describes every kind (fields in constructor order, defaults, the JSON Schema of each field);
each class below gets its constructor, its checked read/write properties, ``repr``/``==`` and
``_to_config()`` from that description. A field is type- and range-checked when it is set
(``TypeError`` / ``ValueError``), from the same schema the Rust ``validate()`` enforces.
Cross-field checks are the Rust ``validate()``, reached through the ``validate_*`` functions.
What stays in Python is behaviour: presets (``secure()``, ``postgres(...)``), aliases
(``*_timeout``, ``max_requests``), ``to_headers()`` and the ``CSP`` builder.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from . import _cello

__all__ = [
    "CSP",
    "ClusterConfig",
    "CqrsConfig",
    "DatabaseConfig",
    "EventSourcingConfig",
    "GraphQLConfig",
    "GrpcConfig",
    "HealthCheckConfig",
    "Http2Config",
    "Http3Config",
    "JwtConfig",
    "KafkaConfig",
    "LimitsConfig",
    "OpenTelemetryConfig",
    "RabbitMQConfig",
    "RateLimitConfig",
    "RedisConfig",
    "SagaConfig",
    "SecurityHeadersConfig",
    "SessionConfig",
    "SqsConfig",
    "StaticFilesConfig",
    "ThreadPoolConfig",
    "TimeoutConfig",
    "TlsConfig",
    "WebSocketConfig",
    "validate_jwt_config",
    "validate_rate_limit_config",
    "validate_session_config",
    "validate_tls_config",
]

Check = Callable[[str, Any], Any]

#: ``cello_config::kinds::describe()``: {class name: {doc, fields: [{name, wire, required, default, schema}]}}.
KINDS: dict[str, Any] = json.loads(_cello.config_kinds())

# Integer formats schemars writes for Rust's integer types → their largest value.
_FORMAT_MAX = {
    "uint8": 2**8 - 1,
    "uint16": 2**16 - 1,
    "uint32": 2**32 - 1,
    "uint64": 2**64 - 1,
    "int32": 2**31 - 1,
    "int64": 2**63 - 1,
}


# ---- field checks, read from the schema ---------------------------------------------------------


def _type_error(name: str, what: str, value: Any) -> TypeError:
    return TypeError(f"{name} must be {what}, not {type(value).__name__}")


def _str_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, Iterable):
        raise _type_error(name, "a list of str", value)
    items = list(value)
    for v in items:
        if not isinstance(v, str):
            raise _type_error(f"items of {name}", "str", v)
    return items


def _anchored(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262: `$` is the very end (Python's also matches before a final \n).
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _schema_check(schema: dict[str, Any]) -> Check:
    """The assignment-time check of one field, from its JSON Schema."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types
    base = next((t for t in types if t != "null"), None)
    fmt = schema.get("format")
    enum = schema.get("enum")
    minimum, maximum = schema.get("minimum"), schema.get("maximum", _FORMAT_MAX.get(fmt))
    exclusive = schema.get("exclusiveMinimum") is True  # OpenAPI 3.0 form, beside `minimum`
    min_length = schema.get("minLength")
    pattern = _anchored(schema["pattern"]) if "pattern" in schema else None
    what = {"integer": "an int", "number": "a number", "boolean": "a bool", "string": "a str"}.get(base, "a value")
    if fmt == "path":
        what = "a path"
    elif fmt == "password":
        what = "a str or bytes"
    what += " or None" if nullable else ""

    def check(name: str, value: Any) -> Any:
        if value is None:
            if base == "array":
                return []
            if nullable:
                return None
            raise _type_error(name, what, value)
        if base == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _type_error(name, what, value)
        elif base == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _type_error(name, what, value)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        elif base == "boolean":
            if not isinstance(value, bool):
                raise _type_error(name, what, value)
        elif base == "string":
            if fmt == "path" and isinstance(value, os.PathLike):
                value = os.fspath(value)
            if fmt == "password" and isinstance(value, (bytes, bytearray)):
                return bytes(value)
            if not isinstance(value, str):
                raise _type_error(name, what, value)
        elif base == "array":
            return _str_list(name, value)
        if enum is not None and value not in enum:
            allowed = ", ".join(repr(c) for c in enum if c is not None)
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if isinstance(value, (int, float)):
            if minimum is not None and exclusive and value <= minimum:
                raise ValueError(f"{name} must be greater than {minimum}, got {value}")
            if minimum is not None and value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}")
            if maximum is not None and value > maximum:
                raise ValueError(f"{name} must be at most {maximum}, got {value}")
        if isinstance(value, str):
            if min_length and len(value) < min_length:
                raise ValueError(f"{name} cannot be empty")
            if pattern is not None and not pattern.search(value):
                raise ValueError(f"{name} has an invalid value {value!r} (must match {pattern.pattern})")
        return value

    return check


class _Field:
    """A checked, readable and writable configuration field (one Rust field)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.check = _schema_check(spec["schema"])
        self.__doc__ = spec["schema"].get("description")

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = self.check(self.name, value)
        # Which fields the caller chose (an assignment after construction is a choice), so a
        # default can be told from an explicit value (e.g. export_metrics, see App.enable_telemetry).
        obj.__dict__.setdefault("_explicit", set()).add(self.name)


def _python_default(spec: dict[str, Any]) -> Any:
    """The constructor default of a field: the Rust default, with lists shown as ``None``
    (meaning empty, as API.md writes them) and whole-number floats as ints (``5``, not ``5.0``)."""
    value = spec["default"]
    if isinstance(value, list) and not value:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _mask_url(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _Config:
    """A view over the Rust kind of the same name (``kind=`` to name another)."""

    _kind: str = ""
    _fields: tuple[str, ...] = ()
    _secrets: tuple[str, ...] = ()  # format "password": shown as '***' by repr
    _urls: tuple[str, ...] = ()  # format "uri": passwords in these URLs are masked by repr

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._kind = kind or cls.__name__
        spec = KINDS[cls._kind]
        fields = [_Field(f) for f in spec["fields"]]
        for f in fields:
            setattr(cls, f.name, f)
        cls._fields = tuple(f.name for f in fields)
        cls._secrets = tuple(f.name for f in fields if f.spec["schema"].get("format") == "password")
        cls._urls = tuple(f.name for f in fields if f.spec["schema"].get("format") == "uri")
        if cls.__doc__ is None and spec.get("doc"):
            cls.__doc__ = spec["doc"]
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        for f in fields:
            default = inspect.Parameter.empty if f.spec["required"] else _python_default(f.spec)
            params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
        signature = inspect.Signature(params)

        def __init__(self: _Config, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            explicit = set(list(bound.arguments)[1:])
            bound.apply_defaults()
            for name, value in list(bound.arguments.items())[1:]:
                setattr(self, name, value)
            self.__dict__["_explicit"] = explicit
            self._post_init()

        __init__.__signature__ = signature  # type: ignore[attr-defined]
        __init__.__qualname__ = f"{cls.__name__}.__init__"
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _post_init(self) -> None:
        """Extra attributes that are not constructor parameters."""

    def __repr__(self) -> str:
        def show(f: str) -> str:
            value = getattr(self, f)
            if f in self._secrets and value is not None:
                return "'***'"
            if f in self._urls:
                return repr(_mask_url(value))
            return repr(value)

        args = ", ".join(f"{f}={show(f)}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._fields}

    def _to_config(self) -> dict[str, Any]:
        """The fields under their snake_case names, as the Rust type accepts them."""
        return self.to_dict()

    def _wire(self) -> dict[str, Any]:
        # bytes secrets travel as arrays of byte values (cello_config::Secret)
        return {k: list(v) if isinstance(v, bytes) else v for k, v in self._to_config().items()}

    def _validate(self) -> None:
        """Run the Rust ``validate()`` of this kind; ``ValueError`` with its message."""
        _cello.validate_config_kind(self._kind, json.dumps(self._wire()))


# ---- server (sections of cello_config::ServerConfig) -------------------------------------------


class TimeoutConfig(_Config):
    """Timeouts in seconds: request head, request body, response write, idle keep-alive, handler."""

    read_header_timeout = property(lambda s: s.read_header, lambda s, v: setattr(s, "read_header", v))
    read_body_timeout = property(lambda s: s.read_body, lambda s, v: setattr(s, "read_body", v))
    write_timeout = property(lambda s: s.write, lambda s, v: setattr(s, "write", v))
    idle_timeout = property(lambda s: s.idle, lambda s, v: setattr(s, "idle", v))
    handler_timeout = property(lambda s: s.handler, lambda s, v: setattr(s, "handler", v))


class LimitsConfig(_Config):
    """Request size and connection limits (bytes; ``max_requests_per_connection=0``: unlimited)."""


class ThreadPoolConfig(_Config):
    """The bounded pool for blocking sync handlers; with ``adaptive``, a sync handler seen to
    run longer than ``offload_threshold_ms`` three times in a row moves to the pool, and back inline
    when an inline trial (one call in 16, then fewer) is fast again."""


class Http2Config(_Config):
    pass


class TlsConfig(_Config):
    pass


class Http3Config(_Config):
    pass


class WebSocketConfig(_Config):
    """WebSocket keep-alive and limits (``app.set_websocket(config)``, ``websocket:`` in
    ``cello.yaml``): ``ping_interval`` / ``idle_timeout`` seconds (0 turns each off),
    ``max_message_size`` bytes (bigger closes with 1009), ``queue_size`` messages buffered each
    way; ``per_message_deflate=True`` takes up a client's permessage-deflate offer (RFC 7692)."""


# ---- deployment --------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours CPU pinning (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ClusterConfig(_Config):
    @classmethod
    def auto(cls) -> ClusterConfig:
        """One worker per CPU this process may run on."""
        return cls(workers=_cpu_count())


# ---- security ----------------------------------------------------------------------------------


class JwtConfig(_Config):
    """JWT verification: ``secret`` is the HMAC key (HS*) or, without ``public_key``, the PEM
    public key (RS/PS/ES/EdDSA); tokens come from ``header_name`` (``Bearer <token>``) or the
    cookie ``cookie_name``; ``leeway`` is the clock skew allowed on ``exp``/``nbf``, in seconds."""


class RateLimitConfig(_Config):
    """Rate limiting per ``key_by`` (``"ip"``, ``"user"``, ``"api_key"``, ``"global"``,
    ``"route"`` or ``"header:<name>"``). ``token_bucket``: ``capacity`` tokens refilled at
    ``refill_rate`` per second. ``sliding_window``: ``capacity`` requests per ``window_secs``.
    ``adaptive``: a token bucket that shrinks towards ``min_capacity`` while the error rate is
    above ``error_threshold`` (a fraction, 0-1). ``backend``: ``"memory"`` or ``"redis"``."""

    max_requests = property(lambda s: s.capacity, lambda s, v: setattr(s, "capacity", v))

    @classmethod
    def token_bucket(cls, capacity: int, refill_rate: float) -> RateLimitConfig:
        return cls("token_bucket", capacity=capacity, refill_rate=refill_rate)

    @classmethod
    def sliding_window(cls, max_requests: int, window_secs: float) -> RateLimitConfig:
        return cls("sliding_window", capacity=max_requests, window_secs=window_secs)

    @classmethod
    def adaptive(cls, capacity: int, refill_rate: float, min_capacity: int, error_threshold: float) -> RateLimitConfig:
        return cls(
            "adaptive",
            capacity=capacity,
            refill_rate=refill_rate,
            min_capacity=min_capacity,
            error_threshold=error_threshold,
        )


class SessionConfig(_Config):
    pass


class SecurityHeadersConfig(_Config):
    """Security response headers. ``None`` (or ``False`` for ``x_content_type_options``)
    leaves a header out; HSTS is sent when ``hsts_max_age`` is set."""

    def _post_init(self) -> None:
        self.csp: CSP | str | None = None  # a Content-Security-Policy to send as well

    @classmethod
    def secure(cls) -> SecurityHeadersConfig:
        """Strict settings: frames denied, HSTS for a year including subdomains, and
        ``X-XSS-Protection: 0`` (the browsers' XSS auditor is gone and could be abused;
        OWASP recommends turning it off). HSTS preload stays off: it is a commitment to
        make deliberately."""
        return cls(
            x_frame_options="DENY",
            x_content_type_options=True,
            x_xss_protection="0",
            referrer_policy="strict-origin-when-cross-origin",
            hsts_max_age=31536000,
            hsts_include_subdomains=True,
            hsts_preload=False,
        )

    def to_headers(self) -> list[tuple[str, str]]:
        """The headers this configuration adds to responses."""
        out: list[tuple[str, str]] = []
        if self.x_frame_options:
            out.append(("X-Frame-Options", self.x_frame_options))
        if self.x_content_type_options:
            out.append(("X-Content-Type-Options", "nosniff"))
        if self.x_xss_protection is not None:
            out.append(("X-XSS-Protection", self.x_xss_protection))
        if self.referrer_policy:
            out.append(("Referrer-Policy", self.referrer_policy))
        if self.hsts_max_age is not None:
            hsts = f"max-age={self.hsts_max_age}"
            if self.hsts_include_subdomains:
                hsts += "; includeSubDomains"
            if self.hsts_preload:
                hsts += "; preload"
            out.append(("Strict-Transport-Security", hsts))
        for name, value in (
            ("Permissions-Policy", self.permissions_policy),
            ("Cross-Origin-Opener-Policy", self.cross_origin_opener_policy),
            ("Cross-Origin-Embedder-Policy", self.cross_origin_embedder_policy),
            ("Cross-Origin-Resource-Policy", self.cross_origin_resource_policy),
        ):
            if value:
                out.append((name, value))
        if self.csp:
            out.append(("Content-Security-Policy", self.csp.build() if isinstance(self.csp, CSP) else str(self.csp)))
        return out

    def _to_config(self) -> dict[str, Any]:
        out = self.to_dict()
        if isinstance(self.csp, CSP):
            out["csp"] = {"directives": self.csp.directives()}
        return out


class CSP:
    """A Content-Security-Policy builder over ``cello_config::CspConfig``. Each directive
    method takes a list of sources (or one str), replaces that directive and returns the
    builder; the source ``"nonce"`` stands for a fresh per-request nonce (the security-headers
    layer writes ``'nonce-…'``; handlers read it as ``request.csp_nonce()``). Keywords such as
    ``self``, ``none``, ``unsafe-inline`` and ``nonce-…``/``sha256-…``
    values are quoted for you. ``build()`` writes directives in a fixed order (Rust's
    ``CSP_DIRECTIVES``) whatever the call order."""

    def __init__(self) -> None:
        self._directives: dict[str, list[str]] = {}

    def directive(self, name: str, sources: Iterable[str] | str | None = None) -> CSP:
        name = name.lower().replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise ValueError(f"invalid CSP directive name {name!r}")
        if sources is None:
            values: list[str] = []
        elif isinstance(sources, str):
            values = [_csp_source(sources)]
        else:
            values = [_csp_source(s) for s in sources]
        self._directives[name] = values
        return self

    def _d(name: str) -> Callable[[CSP, Iterable[str] | str], CSP]:
        def method(self: CSP, sources: Iterable[str] | str) -> CSP:
            return self.directive(name, sources)

        method.__name__ = name.replace("-", "_")
        method.__doc__ = f"Set ``{name}``."
        return method

    default_src = _d("default-src")
    script_src = _d("script-src")
    script_src_elem = _d("script-src-elem")
    script_src_attr = _d("script-src-attr")
    style_src = _d("style-src")
    style_src_elem = _d("style-src-elem")
    style_src_attr = _d("style-src-attr")
    img_src = _d("img-src")
    font_src = _d("font-src")
    connect_src = _d("connect-src")
    media_src = _d("media-src")
    object_src = _d("object-src")
    frame_src = _d("frame-src")
    child_src = _d("child-src")
    worker_src = _d("worker-src")
    manifest_src = _d("manifest-src")
    base_uri = _d("base-uri")
    form_action = _d("form-action")
    frame_ancestors = _d("frame-ancestors")
    report_uri = _d("report-uri")
    report_to = _d("report-to")
    del _d

    def sandbox(self, flags: Iterable[str] | str | None = None) -> CSP:
        """``sandbox`` with optional flags such as ``allow-scripts`` (never quoted)."""
        flags = [flags] if isinstance(flags, str) else list(flags or [])
        for f in flags:
            if not re.fullmatch(r"allow-[a-z-]+", f):
                raise ValueError(f"invalid sandbox flag {f!r}")
        self._directives["sandbox"] = flags
        return self

    def upgrade_insecure_requests(self) -> CSP:
        self._directives["upgrade-insecure-requests"] = []
        return self

    def block_all_mixed_content(self) -> CSP:
        self._directives["block-all-mixed-content"] = []
        return self

    def directives(self) -> dict[str, list[str]]:
        """Directive → sources, as ``CspConfig.directives``."""
        return {k: list(v) for k, v in self._directives.items()}

    def build(self) -> str:
        return _cello.csp_build(json.dumps({"directives": self._directives}))

    def __str__(self) -> str:
        return self.build()

    def __repr__(self) -> str:
        return f"CSP({self.build()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSP):
            return NotImplemented
        return self._directives == other._directives

    __hash__ = None  # type: ignore[assignment]


def _csp_source(source: Any) -> str:
    if not isinstance(source, str):
        raise ValueError(f"a CSP source must be a non-empty str, got {source!r}")
    return _cello.csp_source(source)


class StaticFilesConfig(_Config):
    pass


# ---- observability -----------------------------------------------------------------------------


class OpenTelemetryConfig(_Config):
    pass


class HealthCheckConfig(_Config):
    @classmethod
    def kubernetes(cls) -> HealthCheckConfig:
        """For liveness/readiness probes: terse answers, a short timeout, no caching."""
        return cls(include_details=False, include_system_info=False, timeout_secs=2)

    @classmethod
    def detailed(cls) -> HealthCheckConfig:
        """Every check's details plus system information (keep it off the public internet)."""
        return cls(include_details=True, include_system_info=True)


# ---- data --------------------------------------------------------------------------------------


class DatabaseConfig(_Config):
    @classmethod
    def postgres(
        cls,
        host: str,
        port: int = 5432,
        database: str = "postgres",
        user: str = "postgres",
        password: str | None = None,
        pool_size: int = 10,
    ) -> DatabaseConfig:
        """``postgresql://user:password@host:port/database`` with each part percent-encoded."""
        q = urllib.parse.quote
        auth = q(user, safe="") + (f":{q(password, safe='')}" if password is not None else "")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return cls(f"postgresql://{auth}@{host}:{int(port)}/{q(database, safe='')}", pool_size=pool_size)


class RedisConfig(_Config):
    @classmethod
    def local(cls) -> RedisConfig:
        return cls()

    @classmethod
    def cluster(cls, url: str, pool_size: int = 20, password: str | None = None) -> RedisConfig:
        return cls(url, pool_size=pool_size, cluster_mode=True, password=password)


# ---- APIs --------------------------------------------------------------------------------------


class GraphQLConfig(_Config):
    @classmethod
    def production(cls) -> GraphQLConfig:
        """No playground or introspection; queries limited to depth 15 and complexity 1000."""
        return cls(playground=False, introspection=False, max_depth=15, max_complexity=1000)

    @classmethod
    def development(cls) -> GraphQLConfig:
        """Playground, introspection and tracing on; no limits."""
        return cls(playground=True, introspection=True, tracing=True)


class GrpcConfig(_Config):
    @classmethod
    def local(cls) -> GrpcConfig:
        """Loopback only, reflection on."""
        return cls(address="127.0.0.1:50051")

    @classmethod
    def production(
        cls, address: str = "[::]:50051", max_message_size: int = 4194304, concurrency_limit: int = 1000
    ) -> GrpcConfig:
        """All interfaces, reflection off, a higher concurrency limit."""
        return cls(
            address=address,
            reflection=False,
            max_message_size=max_message_size,
            concurrency_limit=concurrency_limit,
        )


# ---- messaging ---------------------------------------------------------------------------------


class KafkaConfig(_Config):
    @classmethod
    def local(cls) -> KafkaConfig:
        return cls(brokers=["localhost:9092"])


class RabbitMQConfig(_Config):
    @classmethod
    def local(cls) -> RabbitMQConfig:
        return cls("amqp://localhost:5672")


class SqsConfig(_Config):
    @classmethod
    def local(cls, queue_url: str) -> SqsConfig:
        """Against LocalStack on its default port."""
        return cls(queue_url=queue_url, endpoint_url="http://localhost:4566")


# ---- patterns ----------------------------------------------------------------------------------


class EventSourcingConfig(_Config):
    @classmethod
    def memory(cls) -> EventSourcingConfig:
        return cls()

    @classmethod
    def postgresql(cls, url: str) -> EventSourcingConfig:
        return cls(store_type="postgresql", connection_url=url)


class CqrsConfig(_Config):
    @classmethod
    def default(cls) -> CqrsConfig:
        return cls()


class SagaConfig(_Config):
    @classmethod
    def default(cls) -> SagaConfig:
        return cls()


# ---- validators (the Rust validate() of each kind) ----------------------------------------------


def _require(config: Any, cls: type, fn: str) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"{fn}() needs a {cls.__name__}, not {type(config).__name__}")


def validate_jwt_config(config: JwtConfig) -> JwtConfig:
    """Check the algorithm and that the key suits it: an HMAC secret at least as long as the
    hash (RFC 7518 §3.2: 32 bytes for HS256, 48 for HS384, 64 for HS512), a PEM key (or a
    JWKS file) for the asymmetric algorithms. ``none`` is refused."""
    _require(config, JwtConfig, "validate_jwt_config")
    config._validate()
    return config


def validate_session_config(config: SessionConfig) -> SessionConfig:
    """Check SameSite (Strict, Lax or None; None requires a Secure cookie), the path, max_age
    and the ``__Secure-``/``__Host-`` cookie name prefixes."""
    _require(config, SessionConfig, "validate_session_config")
    config._validate()
    return config


def validate_rate_limit_config(config: RateLimitConfig) -> RateLimitConfig:
    """Check the algorithm, the parameters it needs and ``key_by``."""
    _require(config, RateLimitConfig, "validate_rate_limit_config")
    config._validate()
    return config


def _check_readable(label: str, path: str, marker: bytes | None) -> None:
    if not os.path.isfile(path):
        raise ValueError(f"{label} {path!r} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError as e:
        raise ValueError(f"{label} {path!r} cannot be read: {e.strerror or e}") from None
    if marker is not None and marker not in head:
        raise ValueError(f"{label} {path!r} is not a PEM file (no {marker.decode()!r} block)")


def validate_tls_config(config: TlsConfig) -> TlsConfig:
    """Check the versions (1.2 or 1.3, min <= max) and that client certificates have a CA
    (Rust), then that the PEM files exist, are readable and hold a certificate / private key."""
    _require(config, TlsConfig, "validate_tls_config")
    config._validate()
    _check_readable("cert_path", config.cert_path, b"-----BEGIN CERTIFICATE-----")
    _check_readable("key_path", config.key_path, b"PRIVATE KEY-----")
    if config.ca_path is not None:
        _check_readable("ca_path", config.ca_path, b"-----BEGIN CERTIFICATE-----")
    return config
