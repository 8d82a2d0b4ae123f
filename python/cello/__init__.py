"""Cello: a Python web framework whose HTTP engine, routing and JSON run in Rust."""

from ._cello import Request, __version__
from .app import App
from .config import Http2Config, LimitsConfig, ThreadPoolConfig, TimeoutConfig
from .errors import CelloError, ConfigError, HTTPException
from .guards import ForbiddenError, GuardError, UnauthorizedError
from .responses import Response
from .routing import Blueprint

__all__ = [
    "App",
    "Blueprint",
    "CelloError",
    "ConfigError",
    "ForbiddenError",
    "GuardError",
    "HTTPException",
    "Http2Config",
    "LimitsConfig",
    "Request",
    "Response",
    "ThreadPoolConfig",
    "TimeoutConfig",
    "UnauthorizedError",
    "__version__",
]
