"""Config classes of API.md: exact constructor signatures and defaults, checked read/write
properties, presets, repr/eq, the CSP builder, the validate_* functions, and the
``_to_config()`` payloads the Rust data plane reads."""

from __future__ import annotations

import inspect
import os

import pytest
from cello import config as cfg
from cello.config import (
    CSP,
    ClusterConfig,
    CqrsConfig,
    DatabaseConfig,
    EventSourcingConfig,
    GraphQLConfig,
    GrpcConfig,
    HealthCheckConfig,
    Http2Config,
    JwtConfig,
    KafkaConfig,
    LimitsConfig,
    RabbitMQConfig,
    RateLimitConfig,
    RedisConfig,
    SagaConfig,
    SecurityHeadersConfig,
    SessionConfig,
    SqsConfig,
    ThreadPoolConfig,
    TimeoutConfig,
    TlsConfig,
    validate_jwt_config,
    validate_rate_limit_config,
    validate_session_config,
    validate_tls_config,
)

REQ = inspect.Parameter.empty

# API.md's table, verbatim, plus the fields issue 11 adds: (class name, [(parameter, default)]).
SIGNATURES = {
    "TimeoutConfig": [
        ("read_header", 5),
        ("read_body", 30),
        ("write", 30),
        ("idle", 60),
        ("handler", 30),
        ("worker_timeout", 30),  # issue 9: a stuck event loop → /health/live 503, worker replaced
    ],
    "LimitsConfig": [
        ("max_header_size", 8192),
        ("max_body_size", 10485760),
        ("max_connections", 10000),
        ("max_requests_per_connection", 1000),
        ("max_queued_requests", 4096),  # issue 9: the bounded hand-off queue
        ("max_form_parts", 1000),  # issue 12: multipart limits
        ("max_form_field_size", 1048576),
        ("max_form_file_size", None),
    ],
    "ThreadPoolConfig": [("size", 64), ("offload_threshold_ms", 1), ("adaptive", True)],
    "ClusterConfig": [
        ("workers", None),
        ("cpu_affinity", False),
        ("max_restarts", 5),
        ("graceful_shutdown", True),
        ("shutdown_timeout", 30),
    ],
    "TlsConfig": [
        ("cert_path", REQ),
        ("key_path", REQ),
        ("ca_path", None),
        ("min_version", "1.2"),
        ("max_version", "1.3"),
        ("require_client_cert", False),
    ],
    "Http2Config": [
        ("max_concurrent_streams", 100),
        ("initial_window_size", 1048576),
        ("max_frame_size", 16384),
        ("enable_push", False),
        # issue 12: HTTP/2 keep-alive pings, after API.md's fields
        ("keep_alive_interval", None),
        ("keep_alive_timeout", 20),
    ],
    "Http3Config": [
        ("max_idle_timeout", 30),
        ("max_udp_payload_size", 1350),
        ("initial_max_streams_bidi", 100),
        ("enable_0rtt", False),
    ],
    # Not in API.md (issue 12 adds it; see docs/websocket.md).
    "WebSocketConfig": [
        ("ping_interval", 20),
        ("idle_timeout", 60),
        ("max_message_size", 1048576),
        ("queue_size", 16),
        ("per_message_deflate", False),
    ],
    "JwtConfig": [
        ("secret", REQ),
        ("algorithm", "HS256"),
        ("header_name", "Authorization"),
        ("cookie_name", None),
        ("leeway", 0),
        # issue 11's new fields, after API.md's
        ("public_key", None),
        ("jwks_path", None),
        ("issuer", None),
        ("audience", None),
        ("required", True),
    ],
    "RateLimitConfig": [
        ("algorithm", "token_bucket"),
        ("capacity", 100),
        ("refill_rate", 10),
        ("window_secs", 60),
        ("key_by", "ip"),
        ("min_capacity", None),
        ("error_threshold", None),
        ("backend", "memory"),  # issue 11
        ("redis_url", "redis://127.0.0.1:6379"),
    ],
    "SessionConfig": [
        ("cookie_name", "session_id"),
        ("cookie_path", "/"),
        ("cookie_domain", None),
        ("cookie_secure", True),
        ("cookie_http_only", True),
        ("cookie_same_site", "Lax"),
        ("max_age", 86400),
        ("secret", None),  # issue 11
        ("store", "cookie"),
        ("redis_url", "redis://127.0.0.1:6379"),  # the server store of store="redis"
    ],
    "SecurityHeadersConfig": [
        ("x_frame_options", "DENY"),
        ("x_content_type_options", True),
        ("x_xss_protection", "1; mode=block"),
        ("referrer_policy", "strict-origin-when-cross-origin"),
        ("hsts_max_age", None),
        ("hsts_include_subdomains", False),
        ("hsts_preload", False),
        ("permissions_policy", None),  # issue 10
        ("cross_origin_opener_policy", None),
        ("cross_origin_embedder_policy", None),
        ("cross_origin_resource_policy", None),
    ],
    "StaticFilesConfig": [
        ("root", REQ),
        ("prefix", "/static"),
        ("index_file", "index.html"),
        ("enable_etag", True),
        ("enable_last_modified", True),
        ("cache_control", None),
        ("directory_listing", False),
    ],
    "OpenTelemetryConfig": [
        ("service_name", REQ),
        ("service_version", "0.1.0"),
        ("otlp_endpoint", None),
        ("sampling_rate", 1.0),
        ("export_traces", True),
        ("export_metrics", True),
        ("excluded_paths", None),
    ],
    "HealthCheckConfig": [
        ("base_path", "/health"),
        ("include_details", True),
        ("include_system_info", False),
        ("version", None),
        ("timeout_secs", 5),
        ("cache_secs", None),
    ],
    "DatabaseConfig": [
        ("url", REQ),
        ("pool_size", 10),
        ("min_idle", 1),
        ("max_lifetime_secs", 1800),
        ("connection_timeout_secs", 5),
        ("idle_timeout_secs", 300),
        ("application_name", None),
    ],
    "RedisConfig": [
        ("url", "redis://127.0.0.1:6379"),
        ("pool_size", 10),
        ("min_idle", 1),
        ("connection_timeout_secs", 5),
        ("idle_timeout_secs", 300),
        ("cluster_mode", False),
        ("default_ttl", None),
        ("database", 0),
        ("password", None),
        ("tls", False),
        ("key_prefix", None),
    ],
    "GraphQLConfig": [
        ("path", "/graphql"),
        ("playground", True),
        ("introspection", True),
        ("max_depth", None),
        ("max_complexity", None),
        ("batching", False),
        ("tracing", False),
    ],
    "GrpcConfig": [
        ("address", "[::]:50051"),
        ("reflection", True),
        ("max_message_size", 4194304),
        ("enable_web", False),
        ("keepalive_secs", 60),
        ("concurrency_limit", 100),
    ],
    "KafkaConfig": [
        ("brokers", None),
        ("group_id", None),
        ("client_id", None),
        ("auto_commit", True),
        ("session_timeout_ms", 30000),
        ("max_poll_records", 500),
    ],
    "RabbitMQConfig": [
        ("url", "amqp://localhost"),
        ("vhost", "/"),
        ("prefetch_count", 10),
        ("heartbeat", 60),
        ("connection_timeout_secs", 5),
    ],
    "SqsConfig": [
        ("region", "us-east-1"),
        ("queue_url", ""),
        ("endpoint_url", None),
        ("max_messages", 10),
        ("wait_time_secs", 20),
        ("visibility_timeout_secs", 30),
    ],
    "EventSourcingConfig": [
        ("store_type", "memory"),
        ("snapshot_interval", 100),
        ("enable_snapshots", True),
        ("max_events_per_aggregate", 10000),
        ("event_ttl_secs", 0),
        ("connection_url", None),
    ],
    "CqrsConfig": [
        ("enable_event_sync", True),
        ("command_timeout_ms", 5000),
        ("query_timeout_ms", 3000),
        ("max_retries", 3),
    ],
    "SagaConfig": [("max_retries", 3), ("retry_delay_ms", 1000), ("timeout_ms", 30000), ("enable_logging", True)],
}

REQUIRED_ARGS = {
    "TlsConfig": ("cert.pem", "key.pem"),
    "JwtConfig": ("s" * 32,),
    "StaticFilesConfig": ("public",),
    "OpenTelemetryConfig": ("svc",),
    "DatabaseConfig": ("sqlite://x.db",),
}

# Values of the right type for each field, different from the defaults.
OTHER_VALUES = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v / 2}


def make(name: str):
    return getattr(cfg, name)(*REQUIRED_ARGS.get(name, ()))


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_and_defaults(name):
    params = list(inspect.signature(getattr(cfg, name)).parameters.values())
    assert [(p.name, p.default) for p in params] == SIGNATURES[name]


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_fields_are_readable_and_writable(name):
    obj = make(name)
    for field, default in SIGNATURES[name]:
        value = getattr(obj, field)
        if default is not REQ and default is not None:
            assert value == default, field
        assert isinstance(getattr(type(obj), field), cfg._Field)  # a property-like descriptor
        if type(value) in OTHER_VALUES:
            new = OTHER_VALUES[type(value)](value)
            try:
                setattr(obj, field, new)
            except ValueError:  # at the top of its range: go the other way
                new = value - 1
                setattr(obj, field, new)
            assert getattr(obj, field) == new


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_repr_and_eq(name):
    a, b = make(name), make(name)
    assert a == b
    assert repr(a).startswith(f"{name}(")
    first_bool = next((f for f, d in SIGNATURES[name] if isinstance(d, bool)), None)
    if first_bool:
        setattr(b, first_bool, not getattr(b, first_bool))
        assert a != b


def test_fields_are_type_checked():
    t = TimeoutConfig()
    with pytest.raises(TypeError):
        t.read_header = "5"
    with pytest.raises(ValueError):
        t.read_header = 0
    with pytest.raises(ValueError):
        t.idle = float("inf")
    with pytest.raises(TypeError):
        ThreadPoolConfig(adaptive="yes")
    with pytest.raises(ValueError):
        ThreadPoolConfig(size=0)
    with pytest.raises(TypeError):
        LimitsConfig(max_body_size=1.5)
    with pytest.raises(ValueError):
        LimitsConfig(max_header_size=100)
    with pytest.raises(ValueError):
        Http2Config(max_frame_size=1000)
    with pytest.raises(ValueError):
        SqsConfig(max_messages=11)
    with pytest.raises(ValueError):
        EventSourcingConfig(store_type="mongo")
    with pytest.raises(ValueError):
        SecurityHeadersConfig(x_frame_options="ALLOW-FROM x")
    with pytest.raises(ValueError):
        HealthCheckConfig(base_path="health")
    with pytest.raises(TypeError):
        TimeoutConfig(read_header=True)


def test_timeout_aliases():
    t = TimeoutConfig(read_header=1, read_body=2, write=3, idle=4, handler=5)
    assert (t.read_header_timeout, t.read_body_timeout, t.write_timeout, t.idle_timeout, t.handler_timeout) == (
        1,
        2,
        3,
        4,
        5,
    )
    t.handler_timeout = 9
    assert t.handler == 9


def test_to_config_keys_are_the_rust_field_names():
    assert TimeoutConfig()._to_config() == {
        "read_header": 5,
        "read_body": 30,
        "write": 30,
        "idle": 60,
        "handler": 30,
        "worker_timeout": 30,
    }
    assert LimitsConfig()._to_config() == {
        "max_header_size": 8192,
        "max_body_size": 10485760,
        "max_connections": 10000,
        "max_requests_per_connection": 1000,
        "max_queued_requests": 4096,
        "max_form_parts": 1000,
        "max_form_field_size": 1048576,
        "max_form_file_size": None,
    }
    assert ThreadPoolConfig()._to_config() == {"size": 64, "offload_threshold_ms": 1, "adaptive": True}
    assert Http2Config()._to_config() == {
        "max_concurrent_streams": 100,
        "initial_window_size": 1048576,
        "max_frame_size": 16384,
        "enable_push": False,
        "keep_alive_interval": None,
        "keep_alive_timeout": 20.0,
    }


def test_app_accepts_the_configs():
    from cello import App

    app = App()
    app.set_limits(LimitsConfig(max_body_size=1024))
    app.set_timeouts(TimeoutConfig(read_header=2.5))
    conf = app.server_config()
    assert conf["limits"]["max_body_size"] == 1024
    assert conf["timeouts"]["read_header"] == 2.5


# ---- presets -------------------------------------------------------------------------------------


def test_cluster_auto():
    workers = ClusterConfig.auto().workers
    assert isinstance(workers, int) and 1 <= workers <= (os.cpu_count() or 1)


def test_rate_limit_presets():
    tb = RateLimitConfig.token_bucket(50, 5)
    assert (tb.algorithm, tb.capacity, tb.refill_rate) == ("token_bucket", 50, 5)
    sw = RateLimitConfig.sliding_window(100, 30)
    assert (sw.algorithm, sw.max_requests, sw.capacity, sw.window_secs) == ("sliding_window", 100, 100, 30)
    ad = RateLimitConfig.adaptive(100, 10, 20, 0.5)
    assert (ad.algorithm, ad.capacity, ad.refill_rate, ad.min_capacity, ad.error_threshold) == (
        "adaptive",
        100,
        10,
        20,
        0.5,
    )
    for c in (tb, sw, ad):
        assert validate_rate_limit_config(c) is c


def test_security_headers():
    s = SecurityHeadersConfig.secure()
    assert s.hsts_max_age == 31536000 and s.hsts_include_subdomains and not s.hsts_preload
    headers = dict(s.to_headers())
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    default = dict(SecurityHeadersConfig().to_headers())
    assert "Strict-Transport-Security" not in default
    assert default["X-XSS-Protection"] == "1; mode=block"
    s.csp = CSP().default_src(["self"])
    assert dict(s.to_headers())["Content-Security-Policy"] == "default-src 'self'"


def test_health_presets():
    k = HealthCheckConfig.kubernetes()
    assert not k.include_details and not k.include_system_info
    d = HealthCheckConfig.detailed()
    assert d.include_details and d.include_system_info


def test_database_postgres():
    d = DatabaseConfig.postgres("db.local", database="app", user="me", password="p@ss:/w", pool_size=5)
    assert d.url == "postgresql://me:p%40ss%3A%2Fw@db.local:5432/app"
    assert d.pool_size == 5
    assert "p%40ss" not in repr(d) and "***" in repr(d)
    assert DatabaseConfig.postgres("::1").url == "postgresql://postgres@[::1]:5432/postgres"


def test_redis_presets_and_secret_repr():
    assert RedisConfig.local() == RedisConfig()
    c = RedisConfig.cluster("redis://a:7000", password="hunter2")
    assert c.cluster_mode and c.pool_size == 20 and c.password == "hunter2"
    assert "hunter2" not in repr(c)


def test_jwt_repr_hides_secret():
    assert "topsecret" not in repr(JwtConfig("topsecret" * 4))


def test_graphql_grpc_presets():
    p = GraphQLConfig.production()
    assert not p.playground and not p.introspection and p.max_depth and p.max_complexity
    d = GraphQLConfig.development()
    assert d.playground and d.introspection and d.tracing
    assert GrpcConfig.local().address == "127.0.0.1:50051"
    prod = GrpcConfig.production()
    assert not prod.reflection
    assert GrpcConfig.production(address="0.0.0.0:9000").address == "0.0.0.0:9000"


def test_messaging_presets():
    assert KafkaConfig.local().brokers == ["localhost:9092"]
    assert KafkaConfig(brokers="a:1, b:2").brokers == ["a:1", "b:2"]
    assert KafkaConfig().brokers == []
    assert RabbitMQConfig.local().url.startswith("amqp://localhost")
    sqs = SqsConfig.local("http://localhost:4566/000000000000/q")
    assert sqs.queue_url.endswith("/q") and sqs.endpoint_url == "http://localhost:4566"


def test_pattern_presets():
    assert EventSourcingConfig.memory().store_type == "memory"
    pg = EventSourcingConfig.postgresql("postgresql://u:secret@h/db")
    assert (pg.store_type, pg.connection_url) == ("postgresql", "postgresql://u:secret@h/db")
    assert "secret" not in repr(pg)
    assert CqrsConfig.default() == CqrsConfig()
    assert SagaConfig.default() == SagaConfig()


# ---- CSP -----------------------------------------------------------------------------------------


def test_csp_stable_order_and_quoting():
    a = (
        CSP()
        .img_src(["self", "data:"])
        .script_src(["self", "https://cdn.example.com", "nonce-abc"])
        .default_src("none")
        .frame_ancestors(["none"])
        .upgrade_insecure_requests()
    )
    b = (
        CSP()
        .upgrade_insecure_requests()
        .default_src(["none"])
        .frame_ancestors(["none"])
        .script_src(["'self'", "https://cdn.example.com", "'nonce-abc'"])
        .img_src(["self", "data:"])
    )
    expected = (
        "default-src 'none'; script-src 'self' https://cdn.example.com 'nonce-abc'; img-src 'self' data:; "
        "frame-ancestors 'none'; upgrade-insecure-requests"
    )
    assert a.build() == expected == b.build() == str(a)
    assert a == b


def test_csp_replaces_directive_and_validates():
    c = CSP().script_src(["self"]).script_src(["https://x"])
    assert c.build() == "script-src https://x"
    with pytest.raises(ValueError):
        CSP().script_src(["self; script-src *"])
    with pytest.raises(ValueError):
        CSP().script_src(["a b"])
    assert CSP().sandbox(["allow-scripts"]).build() == "sandbox allow-scripts"
    assert CSP().directive("require-trusted-types-for", ["'script'"]).build() == "require-trusted-types-for 'script'"


# ---- validators ----------------------------------------------------------------------------------


def test_validate_jwt():
    ok = JwtConfig("k" * 32)
    assert validate_jwt_config(ok) is ok
    with pytest.raises(ValueError, match="at least 32 bytes"):
        validate_jwt_config(JwtConfig("short"))
    with pytest.raises(ValueError, match="at least 64 bytes"):
        validate_jwt_config(JwtConfig("k" * 32, algorithm="HS512"))
    with pytest.raises(ValueError, match="unknown JWT algorithm"):
        validate_jwt_config(JwtConfig("k" * 32, algorithm="HS999"))
    with pytest.raises(ValueError, match="none"):
        validate_jwt_config(JwtConfig("k" * 32, algorithm="none"))
    with pytest.raises(ValueError, match="PEM"):
        validate_jwt_config(JwtConfig("k" * 32, algorithm="RS256"))
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    assert validate_jwt_config(JwtConfig(pem, algorithm="RS256")).algorithm == "RS256"
    assert validate_jwt_config(JwtConfig(b"\x00" * 48, algorithm="HS384"))
    with pytest.raises(ValueError):
        JwtConfig("k" * 32, header_name="Bad Header")
    with pytest.raises(TypeError):
        validate_jwt_config(SessionConfig())


def test_validate_session():
    ok = SessionConfig()
    assert validate_session_config(ok) is ok
    assert validate_session_config(SessionConfig(cookie_same_site="None", cookie_secure=True))
    with pytest.raises(ValueError, match="cookie_secure"):
        validate_session_config(SessionConfig(cookie_same_site="None", cookie_secure=False))
    with pytest.raises(ValueError, match="'Strict', 'Lax' or 'None'"):
        validate_session_config(SessionConfig(cookie_same_site="Sometimes"))
    with pytest.raises(ValueError, match="max_age"):
        validate_session_config(SessionConfig(max_age=0))
    with pytest.raises(ValueError, match="cookie_path"):
        validate_session_config(SessionConfig(cookie_path="app"))
    with pytest.raises(ValueError, match="__Host-"):
        validate_session_config(SessionConfig(cookie_name="__Host-s", cookie_domain="example.com"))
    with pytest.raises(ValueError):
        SessionConfig(cookie_name="bad name")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "leaky"}, "unknown rate limit algorithm"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": -5}, "capacity"),
        ({"refill_rate": 0}, "refill_rate"),
        ({"algorithm": "sliding_window", "window_secs": 0}, "window_secs"),
        ({"algorithm": "adaptive"}, "min_capacity"),
        ({"algorithm": "adaptive", "min_capacity": 500, "error_threshold": 0.5}, "min_capacity"),
        ({"algorithm": "adaptive", "min_capacity": 5, "error_threshold": 1.5}, "error_threshold"),
        ({"key_by": "cookie"}, "key_by"),
    ],
)
def test_validate_rate_limit_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_rate_limit_config(RateLimitConfig(**kwargs))


def test_validate_rate_limit_key_by_header():
    assert validate_rate_limit_config(RateLimitConfig(key_by="header:X-Api-Key"))


CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def tls_files(tmp_path):
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_text(CERT)
    key.write_text(KEY)
    ca.write_text(CERT)
    return cert, key, ca


def test_validate_tls(tls_files, tmp_path):
    cert, key, ca = tls_files
    ok = TlsConfig(cert, key)
    assert validate_tls_config(ok) is ok
    assert ok.cert_path == str(cert)  # PathLike → str
    assert validate_tls_config(TlsConfig(cert, key, ca_path=ca, require_client_cert=True))
    with pytest.raises(ValueError, match="does not exist"):
        validate_tls_config(TlsConfig(tmp_path / "missing.pem", key))
    with pytest.raises(ValueError, match="does not exist"):
        validate_tls_config(TlsConfig(cert, tmp_path))  # a directory
    with pytest.raises(ValueError, match="greater than max_version"):
        validate_tls_config(TlsConfig(cert, key, min_version="1.3", max_version="1.2"))
    with pytest.raises(ValueError, match="'1.2' or '1.3'"):
        validate_tls_config(TlsConfig(cert, key, min_version="1.0"))
    with pytest.raises(ValueError, match="PEM"):
        validate_tls_config(TlsConfig(key, key))
    with pytest.raises(ValueError, match="ca_path"):
        validate_tls_config(TlsConfig(cert, key, require_client_cert=True))


def test_validate_tls_unreadable(tls_files, monkeypatch):
    cert, key, _ = tls_files

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    # chmod does not stop root, so simulate the failing open() the validator sees.
    monkeypatch.setattr(cfg, "open", denied, raising=False)
    with pytest.raises(ValueError, match="cannot be read: Permission denied"):
        validate_tls_config(TlsConfig(cert, key))


# ---- one source: the views are derived from the Rust kinds ---------------------------------------


def _rust_kinds():
    import json

    from cello import _cello

    return json.loads(_cello.config_kinds())


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_python_defaults_equal_rust_defaults(name):
    """Every constructor default is the Rust `Default` of the same field (lists shown as None)."""
    fields = _rust_kinds()[name]["fields"]
    params = list(inspect.signature(getattr(cfg, name)).parameters.values())
    assert [p.name for p in params] == [f["name"] for f in fields]
    for p, f in zip(params, fields, strict=True):
        if f["required"]:
            assert p.default is REQ, p.name
        elif f["default"] == []:
            assert p.default is None, p.name
        else:
            assert p.default == f["default"], p.name
            assert isinstance(p.default, bool) == isinstance(f["default"], bool), p.name


def test_every_api_class_is_a_rust_kind():
    kinds = _rust_kinds()
    assert set(SIGNATURES) | {"CSP"} == set(kinds)
    for name in SIGNATURES:
        assert issubclass(getattr(cfg, name), cfg._Config)


def test_field_checks_follow_the_rust_schema():
    # ranges declared once on the Rust field (#[schemars(range(...))]) reach Python
    with pytest.raises(ValueError, match="at most 4096"):
        ThreadPoolConfig(size=4097)
    with pytest.raises(ValueError, match="at most 65527"):
        cfg.Http3Config(max_udp_payload_size=70000)
    with pytest.raises(ValueError, match="greater than 0"):
        cfg.Http3Config(max_idle_timeout=0)
    with pytest.raises(ValueError, match="one of 'cookie', 'memory', 'redis'"):
        SessionConfig(store="disk")
    with pytest.raises(ValueError, match="one of 'memory', 'redis'"):
        RateLimitConfig(backend="etcd")
    with pytest.raises(ValueError, match="cannot be empty"):
        DatabaseConfig("")
    with pytest.raises(ValueError):
        SecurityHeadersConfig(x_xss_protection="1\r\nSet-Cookie: x=1")
    with pytest.raises(TypeError):
        JwtConfig(123)
    with pytest.raises(TypeError, match="missing a required argument"):
        TlsConfig()


def test_new_fields_of_issue_11():
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    j = JwtConfig("", algorithm="RS256", public_key=pem, issuer="https://id", audience="api", required=False)
    assert validate_jwt_config(j) is j and not j.required
    assert validate_jwt_config(JwtConfig("", algorithm="ES256", jwks_path="/keys.json"))
    with pytest.raises(ValueError, match="PEM"):
        validate_jwt_config(JwtConfig("", algorithm="ES256"))
    assert validate_rate_limit_config(RateLimitConfig(key_by="route", backend="redis"))
    s = SessionConfig(secret=b"\x01" * 32, store="redis")
    assert validate_session_config(s) is s and "\\x01" not in repr(s)


def test_validators_run_rust_validate():
    # the messages come from cello_config (the same check the server and operator run)
    with pytest.raises(ValueError, match="invalid value for `secret`"):
        validate_jwt_config(JwtConfig("short"))
    with pytest.raises(ValueError, match="leeway must be at most 300"):
        validate_jwt_config(JwtConfig("k" * 32, leeway=301))


def test_server_sections_not_built_yet_are_refused():
    import json

    from cello import _cello

    # TLS and HTTP/3 are built (issue 12): a tls section is accepted (its files are read at
    # start), http3 needs tls.
    _cello.validate_config(json.dumps({"tls": {"certPath": "c.pem", "keyPath": "k.pem"}}))
    with pytest.raises(_cello.ConfigError, match="needs the `tls` section"):
        _cello.validate_config(json.dumps({"http3": {}}))
    # built by issue 11: validated, not refused
    _cello.validate_config(json.dumps({"session": {"store": "memory"}}))
    with pytest.raises(_cello.ConfigError, match="store"):
        _cello.validate_config(json.dumps({"session": {"store": "disk"}}))
    # built by issue 10: validated, not refused
    with pytest.raises(_cello.ConfigError, match="staticFiles.root"):
        _cello.validate_config(json.dumps({"staticFiles": {}}))
    _cello.validate_config(json.dumps({"staticFiles": [{"root": "a", "prefix": "/a"}], "cache": {}}))
    _cello.validate_config(json.dumps({"circuitBreaker": {"failureThreshold": 2}}))
    _cello.validate_config(json.dumps({"limits": LimitsConfig()._to_config()}))
    # issue 11 built these: validated, no longer refused
    _cello.validate_config(json.dumps({"rateLimit": {}}))
    with pytest.raises(_cello.ConfigError, match="at least 32 bytes"):
        _cello.validate_config(json.dumps({"jwt": {}}))


def test_csp_order_is_rusts():
    c = CSP().report_to("grp").default_src("self").directive("x-custom", ["a"])
    assert c.build() == "default-src 'self'; report-to grp; x-custom a"
    s = SecurityHeadersConfig()
    s.csp = c
    assert s._to_config()["csp"] == {"directives": c.directives()}
