"""Cello: a Python web framework whose HTTP engine, routing and JSON run in Rust."""

from . import _memory  # noqa: F401, I001  (before the extension loads: allocator settings)
from . import cqrs, database, eventsourcing, graphql, grpc, guards, messaging, saga, validation
from ._cello import Headers, Request, UploadedFile, __version__
from ._unavailable import placeholder_class, placeholder_function
from .app import App
from .background import BackgroundTasks
from .client import AsyncClient, HttpResponse
from .config import (
    CSP,
    ClusterConfig,
    CqrsConfig,
    DatabaseConfig,
    EventSourcingConfig,
    GraphQLConfig,
    GrpcConfig,
    HealthCheckConfig,
    Http2Config,
    Http3Config,
    JwtConfig,
    KafkaConfig,
    LimitsConfig,
    OpenTelemetryConfig,
    RabbitMQConfig,
    RateLimitConfig,
    RedisConfig,
    SagaConfig,
    SecurityHeadersConfig,
    SessionConfig,
    SqsConfig,
    StaticFilesConfig,
    ThreadPoolConfig,
    TimeoutConfig,
    TlsConfig,
    validate_jwt_config,
    validate_rate_limit_config,
    validate_session_config,
    validate_tls_config,
)
from .di import Depends
from .errors import CelloError, ConfigError, FeatureNotAvailable, HTTPException
from .forms import FormData
from .guards import (
    And,
    Authenticated,
    ForbiddenError,
    Guard,
    GuardError,
    Not,
    Or,
    PermissionGuard,
    RoleGuard,
    UnauthorizedError,
)
from .params import Body, Cookie, File, Form, Header, Path, Query, RequestValidationError
from .problems import ProblemDetails
from .responses import Response
from .routing import Blueprint
from .sse import SseEvent, SseStream
from .templating import MiniJinjaEngine, TemplateEngine, TemplateError, TemplateNotFound
from .websocket import WebSocketMessage

# Published names whose features arrive with later issues: importable, and using them raises
# FeatureNotAvailable (a NotImplementedError) naming the issue.
WebSocket = placeholder_class("cello", "WebSocket", 12)
cache = placeholder_function("cello", "cache", 10)

__all__ = [
    "AsyncClient",
    "FormData",
    "HttpResponse",
    "MiniJinjaEngine",
    "TemplateEngine",
    "TemplateError",
    "TemplateNotFound",
    "WebSocket",
    "cache",
    "cqrs",
    "database",
    "eventsourcing",
    "graphql",
    "grpc",
    "guards",
    "messaging",
    "saga",
    "validation",
    "BackgroundTasks",
    "Body",
    "Cookie",
    "Depends",
    "File",
    "Form",
    "Header",
    "Path",
    "Query",
    "RequestValidationError",
    "CSP",
    "And",
    "App",
    "Authenticated",
    "Blueprint",
    "CelloError",
    "ClusterConfig",
    "ConfigError",
    "CqrsConfig",
    "DatabaseConfig",
    "EventSourcingConfig",
    "FeatureNotAvailable",
    "ForbiddenError",
    "GraphQLConfig",
    "GrpcConfig",
    "Guard",
    "GuardError",
    "HTTPException",
    "Headers",
    "HealthCheckConfig",
    "Http2Config",
    "Http3Config",
    "JwtConfig",
    "KafkaConfig",
    "LimitsConfig",
    "Not",
    "OpenTelemetryConfig",
    "Or",
    "PermissionGuard",
    "ProblemDetails",
    "RabbitMQConfig",
    "RateLimitConfig",
    "RedisConfig",
    "Request",
    "Response",
    "RoleGuard",
    "SagaConfig",
    "SecurityHeadersConfig",
    "SessionConfig",
    "SqsConfig",
    "SseEvent",
    "SseStream",
    "StaticFilesConfig",
    "ThreadPoolConfig",
    "TimeoutConfig",
    "TlsConfig",
    "UnauthorizedError",
    "UploadedFile",
    "WebSocketMessage",
    "__version__",
    "validate_jwt_config",
    "validate_rate_limit_config",
    "validate_session_config",
    "validate_tls_config",
]
