"""Configuration classes.

Every class takes the constructor arguments of API.md; every field is a property
that checks its type (and obvious ranges) when set, so a typo fails where it is
made. Checks across fields (a secret long enough for its algorithm, SameSite=None
without Secure, TLS files that exist, ...) are done by the ``validate_*``
functions. ``TimeoutConfig``, ``LimitsConfig``, ``ThreadPoolConfig`` and
``Http2Config`` are sent to the Rust data plane through ``_to_config()``, which
validates them again when the app starts. The classes for features that are not
built yet only hold their values.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

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
    "validate_jwt_config",
    "validate_rate_limit_config",
    "validate_session_config",
    "validate_tls_config",
]

Check = Callable[[str, Any], Any]


# ---- field checks ----------------------------------------------------------------------------


def _type_error(name: str, what: str, value: Any) -> TypeError:
    return TypeError(f"{name} must be {what}, not {type(value).__name__}")


def _int(min_value: int | None = 0, max_value: int | None = None, optional: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(name, "an int" + (" or None" if optional else ""), value)
        if min_value is not None and value < min_value:
            raise ValueError(f"{name} must be at least {min_value}, got {value}")
        if max_value is not None and value > max_value:
            raise ValueError(f"{name} must be at most {max_value}, got {value}")
        return value

    return check


def _num(
    min_value: float | None = 0, positive: bool = False, max_value: float | None = None, optional: bool = False
) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(name, "a number" + (" or None" if optional else ""), value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        if positive and value <= 0:
            raise ValueError(f"{name} must be greater than 0, got {value}")
        if min_value is not None and value < min_value:
            raise ValueError(f"{name} must be at least {min_value}, got {value}")
        if max_value is not None and value > max_value:
            raise ValueError(f"{name} must be at most {max_value}, got {value}")
        return value

    return check


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(name, "a bool", value)
    return value


def _str(optional: bool = False, nonempty: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise _type_error(name, "a str" + (" or None" if optional else ""), value)
        if nonempty and not value:
            raise ValueError(f"{name} cannot be empty")
        return value

    return check


def _secret(name: str, value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        raise _type_error(name, "a str or bytes", value)
    return value


def _path(optional: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise _type_error(name, "a path" + (" or None" if optional else ""), value)
        return os.fspath(value)

    return check


def _url_path(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(name, "a str", value)
    if not value.startswith("/"):
        raise ValueError(f"{name} must start with '/', got {value!r}")
    return value


def _choice(*choices: Any, optional: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        return value

    return check


def _str_list(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, Iterable):
        raise _type_error(name, "a list of str", value)
    items = list(value)
    for v in items:
        if not isinstance(v, str):
            raise _type_error(f"items of {name}", "str", v)
    return items


def _any(name: str, value: Any) -> Any:
    return value


class _Field:
    """A checked, readable and writable configuration field."""

    def __init__(self, check: Check = _any) -> None:
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = self.check(self.name, value)


def _mask_url(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _Config:
    """Fields in constructor order; ``_to_config`` gives them under their snake_case names."""

    _fields: tuple[str, ...] = ()
    _secrets: tuple[str, ...] = ()  # shown as '***' by repr
    _urls: tuple[str, ...] = ()  # passwords in these URLs are masked by repr

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = tuple(k for k, v in cls.__dict__.items() if isinstance(v, _Field))

    def _set(self, values: dict[str, Any]) -> None:
        for f in self._fields:
            setattr(self, f, values[f])

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
        return self.to_dict()


# ---- server (sent to Rust) ---------------------------------------------------------------------


class TimeoutConfig(_Config):
    """Timeouts in seconds: request head, request body, response write, idle keep-alive, handler."""

    read_header = _Field(_num(positive=True))
    read_body = _Field(_num(positive=True))
    write = _Field(_num(positive=True))
    idle = _Field(_num(positive=True))
    handler = _Field(_num(positive=True))

    def __init__(self, read_header=5, read_body=30, write=30, idle=60, handler=30) -> None:
        self._set(locals())

    read_header_timeout = property(lambda s: s.read_header, lambda s, v: setattr(s, "read_header", v))
    read_body_timeout = property(lambda s: s.read_body, lambda s, v: setattr(s, "read_body", v))
    write_timeout = property(lambda s: s.write, lambda s, v: setattr(s, "write", v))
    idle_timeout = property(lambda s: s.idle, lambda s, v: setattr(s, "idle", v))
    handler_timeout = property(lambda s: s.handler, lambda s, v: setattr(s, "handler", v))


class LimitsConfig(_Config):
    """Request size and connection limits (bytes; ``max_requests_per_connection=0``: unlimited)."""

    max_header_size = _Field(_int(1024))
    max_body_size = _Field(_int(0))
    max_connections = _Field(_int(1))
    max_requests_per_connection = _Field(_int(0))

    def __init__(
        self, max_header_size=8192, max_body_size=10485760, max_connections=10000, max_requests_per_connection=1000
    ) -> None:
        self._set(locals())


class ThreadPoolConfig(_Config):
    """The bounded pool for blocking sync handlers; with ``adaptive``, a sync handler seen to
    run longer than ``offload_threshold_ms`` moves to the pool from then on."""

    size = _Field(_int(1, 4096))
    offload_threshold_ms = _Field(_int(0))
    adaptive = _Field(_bool)

    def __init__(self, size=64, offload_threshold_ms=1, adaptive=True) -> None:
        self._set(locals())


class Http2Config(_Config):
    max_concurrent_streams = _Field(_int(1, 2**32 - 1))
    initial_window_size = _Field(_int(0, 2**31 - 1))
    max_frame_size = _Field(_int(16384, 16777215))
    enable_push = _Field(_bool)

    def __init__(
        self, max_concurrent_streams=100, initial_window_size=1048576, max_frame_size=16384, enable_push=False
    ) -> None:
        self._set(locals())


# ---- deployment --------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours CPU pinning (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ClusterConfig(_Config):
    workers = _Field(_int(1, optional=True))
    cpu_affinity = _Field(_bool)
    max_restarts = _Field(_int(0))
    graceful_shutdown = _Field(_bool)
    shutdown_timeout = _Field(_num(0))

    def __init__(self, workers=None, cpu_affinity=False, max_restarts=5, graceful_shutdown=True, shutdown_timeout=30):
        self._set(locals())

    @classmethod
    def auto(cls) -> ClusterConfig:
        """One worker per CPU this process may run on."""
        return cls(workers=_cpu_count())


_TLS_VERSIONS = ("1.2", "1.3")


class TlsConfig(_Config):
    cert_path = _Field(_path())
    key_path = _Field(_path())
    ca_path = _Field(_path(optional=True))
    min_version = _Field(_str())
    max_version = _Field(_str())
    require_client_cert = _Field(_bool)

    def __init__(
        self, cert_path, key_path, ca_path=None, min_version="1.2", max_version="1.3", require_client_cert=False
    ) -> None:
        self._set(locals())


class Http3Config(_Config):
    max_idle_timeout = _Field(_num(positive=True))
    max_udp_payload_size = _Field(_int(1200, 65527))
    initial_max_streams_bidi = _Field(_int(0))
    enable_0rtt = _Field(_bool)

    def __init__(self, max_idle_timeout=30, max_udp_payload_size=1350, initial_max_streams_bidi=100, enable_0rtt=False):
        self._set(locals())


# ---- security ----------------------------------------------------------------------------------

_JWT_HMAC = {"HS256": 32, "HS384": 48, "HS512": 64}
_JWT_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header_name(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(name, "a str", value)
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{name} is not a valid header name: {value!r}")
    return value


def _cookie_name(optional: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise _type_error(name, "a str", value)
        if not _HEADER_NAME.match(value):
            raise ValueError(f"{name} is not a valid cookie name: {value!r}")
        return value

    return check


class JwtConfig(_Config):
    """JWT verification: ``secret`` is the HMAC key (HS*) or the PEM public key (RS/PS/ES/EdDSA);
    tokens come from ``header_name`` (``Bearer <token>``) or the cookie ``cookie_name``;
    ``leeway`` is the clock skew allowed on ``exp``/``nbf``, in seconds."""

    _secrets = ("secret",)

    secret = _Field(_secret)
    algorithm = _Field(_str())
    header_name = _Field(_header_name)
    cookie_name = _Field(_cookie_name(optional=True))
    leeway = _Field(_num(0))

    def __init__(self, secret, algorithm="HS256", header_name="Authorization", cookie_name=None, leeway=0) -> None:
        self._set(locals())


_RATE_ALGORITHMS = ("token_bucket", "sliding_window", "adaptive")
_RATE_KEYS = ("ip", "user", "api_key", "global")


class RateLimitConfig(_Config):
    """Rate limiting per ``key_by`` (``"ip"``, ``"user"``, ``"api_key"``, ``"global"`` or
    ``"header:<name>"``). ``token_bucket``: ``capacity`` tokens refilled at ``refill_rate`` per
    second. ``sliding_window``: ``capacity`` requests per ``window_secs``. ``adaptive``: a token
    bucket that shrinks towards ``min_capacity`` while the error rate is above
    ``error_threshold`` (a fraction, 0-1)."""

    algorithm = _Field(_str())
    capacity = _Field(_int(None))
    refill_rate = _Field(_num(None))
    window_secs = _Field(_num(None))
    key_by = _Field(_str())
    min_capacity = _Field(_int(None, optional=True))
    error_threshold = _Field(_num(None, optional=True))

    def __init__(
        self,
        algorithm="token_bucket",
        capacity=100,
        refill_rate=10,
        window_secs=60,
        key_by="ip",
        min_capacity=None,
        error_threshold=None,
    ) -> None:
        self._set(locals())

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
    cookie_name = _Field(_cookie_name())
    cookie_path = _Field(_str())
    cookie_domain = _Field(_str(optional=True))
    cookie_secure = _Field(_bool)
    cookie_http_only = _Field(_bool)
    cookie_same_site = _Field(_str(optional=True))
    max_age = _Field(_int(None, optional=True))

    def __init__(
        self,
        cookie_name="session_id",
        cookie_path="/",
        cookie_domain=None,
        cookie_secure=True,
        cookie_http_only=True,
        cookie_same_site="Lax",
        max_age=86400,
    ) -> None:
        self._set(locals())


_REFERRER_POLICIES = (
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
)


def _header_value(optional: bool = True) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise _type_error(name, "a str or None", value)
        if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
            raise ValueError(f"{name} cannot contain CR, LF, NUL or other control characters")
        return value

    return check


class SecurityHeadersConfig(_Config):
    """Security response headers. ``None`` (or ``False`` for ``x_content_type_options``)
    leaves a header out; HSTS is sent when ``hsts_max_age`` is set."""

    x_frame_options = _Field(_choice("DENY", "SAMEORIGIN", optional=True))
    x_content_type_options = _Field(_bool)
    x_xss_protection = _Field(_header_value())
    referrer_policy = _Field(_choice(*_REFERRER_POLICIES, optional=True))
    hsts_max_age = _Field(_int(0, optional=True))
    hsts_include_subdomains = _Field(_bool)
    hsts_preload = _Field(_bool)

    def __init__(
        self,
        x_frame_options="DENY",
        x_content_type_options=True,
        x_xss_protection="1; mode=block",
        referrer_policy="strict-origin-when-cross-origin",
        hsts_max_age=None,
        hsts_include_subdomains=False,
        hsts_preload=False,
    ) -> None:
        self._set(locals())
        self.csp: CSP | str | None = None  # **new**: a Content-Security-Policy to send as well

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
        if self.csp:
            out.append(("Content-Security-Policy", self.csp.build() if isinstance(self.csp, CSP) else str(self.csp)))
        return out


# Directives in the order ``build`` writes them (CSP Level 3 order), so output is stable.
_CSP_DIRECTIVES = (
    "default-src",
    "script-src",
    "script-src-elem",
    "script-src-attr",
    "style-src",
    "style-src-elem",
    "style-src-attr",
    "img-src",
    "font-src",
    "connect-src",
    "media-src",
    "object-src",
    "frame-src",
    "child-src",
    "worker-src",
    "manifest-src",
    "prefetch-src",
    "base-uri",
    "form-action",
    "frame-ancestors",
    "sandbox",
    "upgrade-insecure-requests",
    "block-all-mixed-content",
    "require-trusted-types-for",
    "trusted-types",
    "report-uri",
    "report-to",
)
_CSP_KEYWORDS = frozenset(
    {
        "self",
        "none",
        "unsafe-inline",
        "unsafe-eval",
        "unsafe-hashes",
        "strict-dynamic",
        "report-sample",
        "wasm-unsafe-eval",
        "inline-speculation-rules",
    }
)
_CSP_QUOTED_PREFIXES = ("nonce-", "sha256-", "sha384-", "sha512-")


def _csp_source(source: str) -> str:
    if not isinstance(source, str) or not source:
        raise ValueError(f"a CSP source must be a non-empty str, got {source!r}")
    if re.search(r"[\s;,]", source) or re.search(r"[\x00-\x1f\x7f]", source):
        raise ValueError(f"a CSP source cannot contain whitespace, ';' or ',': {source!r}")
    if source.lower() in _CSP_KEYWORDS or source.startswith(_CSP_QUOTED_PREFIXES):
        return f"'{source}'"  # "self" → "'self'"
    return source


class CSP:
    """A Content-Security-Policy builder. Each directive method takes a list of sources
    (or one str), replaces that directive and returns the builder; keywords such as
    ``self``, ``none``, ``unsafe-inline`` and ``nonce-…``/``sha256-…`` values are quoted
    for you. ``build()`` writes directives in a fixed order whatever the call order."""

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

    def build(self) -> str:
        known = [d for d in _CSP_DIRECTIVES if d in self._directives]
        extra = sorted(d for d in self._directives if d not in _CSP_DIRECTIVES)
        return "; ".join(" ".join([d, *self._directives[d]]) for d in [*known, *extra])

    def __str__(self) -> str:
        return self.build()

    def __repr__(self) -> str:
        return f"CSP({self.build()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSP):
            return NotImplemented
        return self._directives == other._directives

    __hash__ = None  # type: ignore[assignment]


class StaticFilesConfig(_Config):
    root = _Field(_path())
    prefix = _Field(_url_path)
    index_file = _Field(_str(optional=True))
    enable_etag = _Field(_bool)
    enable_last_modified = _Field(_bool)
    cache_control = _Field(_header_value())
    directory_listing = _Field(_bool)

    def __init__(
        self,
        root,
        prefix="/static",
        index_file="index.html",
        enable_etag=True,
        enable_last_modified=True,
        cache_control=None,
        directory_listing=False,
    ) -> None:
        self._set(locals())


# ---- observability -----------------------------------------------------------------------------


_DEFAULT = object()  # a default the caller did not choose


class _Tracked(_Field):
    """A field whose assignment after construction counts as the caller's choice."""

    def __set__(self, obj: Any, value: Any) -> None:
        super().__set__(obj, value)
        obj.__dict__[f"_{self.name}_explicit"] = True


class OpenTelemetryConfig(_Config):
    service_name = _Field(_str(nonempty=True))
    service_version = _Field(_str())
    otlp_endpoint = _Field(_str(optional=True))
    sampling_rate = _Field(_num(0, max_value=1))
    export_traces = _Field(_bool)
    export_metrics = _Tracked(_bool)
    excluded_paths = _Field(_str_list)

    def __init__(
        self,
        service_name,
        service_version="0.1.0",
        otlp_endpoint=None,
        sampling_rate=1.0,
        export_traces=True,
        export_metrics=_DEFAULT,
        excluded_paths=None,
    ) -> None:
        # OTLP metrics are not built: only an explicit export_metrics=True is refused (by
        # App.enable_telemetry); the published default True must not make every app fail.
        explicit = export_metrics is not _DEFAULT
        export_metrics = True if not explicit else export_metrics
        self._set(locals())
        self.__dict__["_export_metrics_explicit"] = explicit


OpenTelemetryConfig.__init__.__signature__ = inspect.signature(OpenTelemetryConfig.__init__).replace(  # type: ignore[attr-defined]
    parameters=[
        p.replace(default=True) if p.name == "export_metrics" else p
        for p in inspect.signature(OpenTelemetryConfig.__init__).parameters.values()
    ]
)


class HealthCheckConfig(_Config):
    base_path = _Field(_url_path)
    include_details = _Field(_bool)
    include_system_info = _Field(_bool)
    version = _Field(_str(optional=True))
    timeout_secs = _Field(_num(positive=True))
    cache_secs = _Field(_num(0, optional=True))

    def __init__(
        self,
        base_path="/health",
        include_details=True,
        include_system_info=False,
        version=None,
        timeout_secs=5,
        cache_secs=None,
    ) -> None:
        self._set(locals())

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
    _urls = ("url",)

    url = _Field(_str(nonempty=True))
    pool_size = _Field(_int(1))
    min_idle = _Field(_int(0))
    max_lifetime_secs = _Field(_num(0))
    connection_timeout_secs = _Field(_num(positive=True))
    idle_timeout_secs = _Field(_num(0))
    application_name = _Field(_str(optional=True))

    def __init__(
        self,
        url,
        pool_size=10,
        min_idle=1,
        max_lifetime_secs=1800,
        connection_timeout_secs=5,
        idle_timeout_secs=300,
        application_name=None,
    ) -> None:
        self._set(locals())

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
    _secrets = ("password",)
    _urls = ("url",)

    url = _Field(_str(nonempty=True))
    pool_size = _Field(_int(1))
    min_idle = _Field(_int(0))
    connection_timeout_secs = _Field(_num(positive=True))
    idle_timeout_secs = _Field(_num(0))
    cluster_mode = _Field(_bool)
    default_ttl = _Field(_int(1, optional=True))
    database = _Field(_int(0))
    password = _Field(_str(optional=True))
    tls = _Field(_bool)
    key_prefix = _Field(_str(optional=True))

    def __init__(
        self,
        url="redis://127.0.0.1:6379",
        pool_size=10,
        min_idle=1,
        connection_timeout_secs=5,
        idle_timeout_secs=300,
        cluster_mode=False,
        default_ttl=None,
        database=0,
        password=None,
        tls=False,
        key_prefix=None,
    ) -> None:
        self._set(locals())

    @classmethod
    def local(cls) -> RedisConfig:
        return cls()

    @classmethod
    def cluster(cls, url: str, pool_size: int = 20, password: str | None = None) -> RedisConfig:
        return cls(url, pool_size=pool_size, cluster_mode=True, password=password)


# ---- APIs --------------------------------------------------------------------------------------


class GraphQLConfig(_Config):
    path = _Field(_url_path)
    playground = _Field(_bool)
    introspection = _Field(_bool)
    max_depth = _Field(_int(1, optional=True))
    max_complexity = _Field(_int(1, optional=True))
    batching = _Field(_bool)
    tracing = _Field(_bool)

    def __init__(
        self,
        path="/graphql",
        playground=True,
        introspection=True,
        max_depth=None,
        max_complexity=None,
        batching=False,
        tracing=False,
    ) -> None:
        self._set(locals())

    @classmethod
    def production(cls) -> GraphQLConfig:
        """No playground or introspection; queries limited to depth 15 and complexity 1000."""
        return cls(playground=False, introspection=False, max_depth=15, max_complexity=1000)

    @classmethod
    def development(cls) -> GraphQLConfig:
        """Playground, introspection and tracing on; no limits."""
        return cls(playground=True, introspection=True, tracing=True)


class GrpcConfig(_Config):
    address = _Field(_str(nonempty=True))
    reflection = _Field(_bool)
    max_message_size = _Field(_int(1))
    enable_web = _Field(_bool)
    keepalive_secs = _Field(_num(0))
    concurrency_limit = _Field(_int(1))

    def __init__(
        self,
        address="[::]:50051",
        reflection=True,
        max_message_size=4194304,
        enable_web=False,
        keepalive_secs=60,
        concurrency_limit=100,
    ) -> None:
        self._set(locals())

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
    brokers = _Field(_str_list)
    group_id = _Field(_str(optional=True))
    client_id = _Field(_str(optional=True))
    auto_commit = _Field(_bool)
    session_timeout_ms = _Field(_int(1))
    max_poll_records = _Field(_int(1))

    def __init__(
        self,
        brokers=None,
        group_id=None,
        client_id=None,
        auto_commit=True,
        session_timeout_ms=30000,
        max_poll_records=500,
    ) -> None:
        self._set(locals())

    @classmethod
    def local(cls) -> KafkaConfig:
        return cls(brokers=["localhost:9092"])


class RabbitMQConfig(_Config):
    _urls = ("url",)

    url = _Field(_str(nonempty=True))
    vhost = _Field(_str())
    prefetch_count = _Field(_int(0, 65535))
    heartbeat = _Field(_int(0))
    connection_timeout_secs = _Field(_num(positive=True))

    def __init__(self, url="amqp://localhost", vhost="/", prefetch_count=10, heartbeat=60, connection_timeout_secs=5):
        self._set(locals())

    @classmethod
    def local(cls) -> RabbitMQConfig:
        return cls("amqp://localhost:5672")


class SqsConfig(_Config):
    """Amazon SQS; the ranges are SQS's own (at most 10 messages per receive, long polling up
    to 20 s, visibility timeout up to 12 h)."""

    region = _Field(_str(nonempty=True))
    queue_url = _Field(_str())
    endpoint_url = _Field(_str(optional=True))
    max_messages = _Field(_int(1, 10))
    wait_time_secs = _Field(_int(0, 20))
    visibility_timeout_secs = _Field(_int(0, 43200))

    def __init__(
        self,
        region="us-east-1",
        queue_url="",
        endpoint_url=None,
        max_messages=10,
        wait_time_secs=20,
        visibility_timeout_secs=30,
    ) -> None:
        self._set(locals())

    @classmethod
    def local(cls, queue_url: str) -> SqsConfig:
        """Against LocalStack on its default port."""
        return cls(queue_url=queue_url, endpoint_url="http://localhost:4566")


# ---- patterns ----------------------------------------------------------------------------------


class EventSourcingConfig(_Config):
    _urls = ("connection_url",)

    store_type = _Field(_choice("memory", "sqlite", "postgresql"))
    snapshot_interval = _Field(_int(1))
    enable_snapshots = _Field(_bool)
    max_events_per_aggregate = _Field(_int(1))
    event_ttl_secs = _Field(_int(0))  # 0: keep events forever
    connection_url = _Field(_str(optional=True))

    def __init__(
        self,
        store_type="memory",
        snapshot_interval=100,
        enable_snapshots=True,
        max_events_per_aggregate=10000,
        event_ttl_secs=0,
        connection_url=None,
    ) -> None:
        self._set(locals())

    @classmethod
    def memory(cls) -> EventSourcingConfig:
        return cls()

    @classmethod
    def postgresql(cls, url: str) -> EventSourcingConfig:
        return cls(store_type="postgresql", connection_url=url)


class CqrsConfig(_Config):
    enable_event_sync = _Field(_bool)
    command_timeout_ms = _Field(_int(1))
    query_timeout_ms = _Field(_int(1))
    max_retries = _Field(_int(0))

    def __init__(self, enable_event_sync=True, command_timeout_ms=5000, query_timeout_ms=3000, max_retries=3) -> None:
        self._set(locals())

    @classmethod
    def default(cls) -> CqrsConfig:
        return cls()


class SagaConfig(_Config):
    max_retries = _Field(_int(0))
    retry_delay_ms = _Field(_int(0))
    timeout_ms = _Field(_int(1))
    enable_logging = _Field(_bool)

    def __init__(self, max_retries=3, retry_delay_ms=1000, timeout_ms=30000, enable_logging=True) -> None:
        self._set(locals())

    @classmethod
    def default(cls) -> SagaConfig:
        return cls()


# ---- validators --------------------------------------------------------------------------------


def _require(config: Any, cls: type, fn: str) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"{fn}() needs a {cls.__name__}, not {type(config).__name__}")


def validate_jwt_config(config: JwtConfig) -> JwtConfig:
    """Check the algorithm and that the key suits it: an HMAC secret at least as long as the
    hash (RFC 7518 §3.2: 32 bytes for HS256, 48 for HS384, 64 for HS512), a PEM key for the
    asymmetric algorithms. ``none`` is refused."""
    _require(config, JwtConfig, "validate_jwt_config")
    alg = config.algorithm
    secret = config.secret.encode() if isinstance(config.secret, str) else bytes(config.secret)
    if alg in _JWT_HMAC:
        need = _JWT_HMAC[alg]
        if len(secret) < need:
            raise ValueError(f"the {alg} secret must be at least {need} bytes long (got {len(secret)})")
    elif alg in _JWT_ASYMMETRIC:
        if b"-----BEGIN" not in secret:
            raise ValueError(f"{alg} needs a PEM-encoded key as the secret")
    elif alg.lower() == "none":
        raise ValueError("the 'none' JWT algorithm is refused: tokens would not be verified")
    else:
        known = ", ".join([*_JWT_HMAC, *_JWT_ASYMMETRIC])
        raise ValueError(f"unknown JWT algorithm {alg!r}; use one of {known}")
    if config.leeway > 300:
        raise ValueError(f"leeway must be at most 300 seconds (got {config.leeway})")
    return config


def validate_session_config(config: SessionConfig) -> SessionConfig:
    """Check SameSite (Strict, Lax or None; None requires a Secure cookie), the path, max_age
    and the ``__Secure-``/``__Host-`` cookie name prefixes."""
    _require(config, SessionConfig, "validate_session_config")
    same_site = config.cookie_same_site
    if same_site is not None:
        if same_site.lower() not in ("strict", "lax", "none"):
            raise ValueError(f"cookie_same_site must be 'Strict', 'Lax' or 'None', got {same_site!r}")
        if same_site.lower() == "none" and not config.cookie_secure:
            raise ValueError("cookie_same_site='None' requires cookie_secure=True (browsers reject it otherwise)")
    if not config.cookie_path.startswith("/"):
        raise ValueError(f"cookie_path must start with '/', got {config.cookie_path!r}")
    if config.max_age is not None and config.max_age <= 0:
        raise ValueError(f"max_age must be positive (or None for a browser-session cookie), got {config.max_age}")
    if config.cookie_domain is not None and (not config.cookie_domain or re.search(r"[\s;,]", config.cookie_domain)):
        raise ValueError(f"invalid cookie_domain {config.cookie_domain!r}")
    name = config.cookie_name
    if name.startswith(("__Secure-", "__Host-")) and not config.cookie_secure:
        raise ValueError(f"a cookie named {name} requires cookie_secure=True")
    if name.startswith("__Host-") and (config.cookie_domain is not None or config.cookie_path != "/"):
        raise ValueError(f"a cookie named {name} requires cookie_path='/' and no cookie_domain")
    return config


def validate_rate_limit_config(config: RateLimitConfig) -> RateLimitConfig:
    _require(config, RateLimitConfig, "validate_rate_limit_config")
    alg = config.algorithm
    if alg not in _RATE_ALGORITHMS:
        raise ValueError(f"unknown rate limit algorithm {alg!r}; use one of {', '.join(_RATE_ALGORITHMS)}")
    if config.capacity <= 0:
        raise ValueError(f"capacity must be greater than 0, got {config.capacity}")
    if alg in ("token_bucket", "adaptive") and config.refill_rate <= 0:
        raise ValueError(f"refill_rate must be greater than 0, got {config.refill_rate}")
    if alg == "sliding_window" and config.window_secs <= 0:
        raise ValueError(f"window_secs must be greater than 0, got {config.window_secs}")
    if alg == "adaptive":
        if config.min_capacity is None or not 0 < config.min_capacity <= config.capacity:
            raise ValueError(
                f"the adaptive algorithm needs 0 < min_capacity <= capacity, got min_capacity={config.min_capacity}"
            )
        if config.error_threshold is None or not 0 < config.error_threshold <= 1:
            raise ValueError(f"the adaptive algorithm needs an error_threshold in (0, 1], got {config.error_threshold}")
    key = config.key_by
    if key not in _RATE_KEYS and not (key.startswith("header:") and _HEADER_NAME.match(key[len("header:") :])):
        raise ValueError(f"key_by must be one of {', '.join(_RATE_KEYS)} or 'header:<name>', got {key!r}")
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
    """Check the versions (1.2 or 1.3, min <= max) and that the PEM files exist, are readable
    and hold a certificate / private key; client certificates need a CA."""
    _require(config, TlsConfig, "validate_tls_config")
    for field in ("min_version", "max_version"):
        value = getattr(config, field)
        if value not in _TLS_VERSIONS:
            raise ValueError(f"{field} must be '1.2' or '1.3', got {value!r}")
    if _TLS_VERSIONS.index(config.min_version) > _TLS_VERSIONS.index(config.max_version):
        raise ValueError(f"min_version {config.min_version} is greater than max_version {config.max_version}")
    _check_readable("cert_path", config.cert_path, b"-----BEGIN CERTIFICATE-----")
    _check_readable("key_path", config.key_path, b"PRIVATE KEY-----")
    if config.ca_path is not None:
        _check_readable("ca_path", config.ca_path, b"-----BEGIN CERTIFICATE-----")
    elif config.require_client_cert:
        raise ValueError("require_client_cert=True needs ca_path (the CA that signs client certificates)")
    return config
