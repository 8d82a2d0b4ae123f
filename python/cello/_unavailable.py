"""Published names whose feature has not been built yet.

Cello 1.x apps import these names, so they exist; *using* one (instantiating, calling,
decorating, reading a class attribute) raises ``FeatureNotAvailable`` naming the issue that
builds it. Never a silent stub.
"""

from __future__ import annotations

from typing import Any

from .errors import FeatureNotAvailable

ISSUES = {
    12: "transport and real-time (TLS, HTTP/3, WebSocket)",
    14: "the data layer (SQL pools, transactions, Redis)",
    15: "messaging (Kafka, RabbitMQ, SQS, Redis consumers and producers)",
    16: "event sourcing, CQRS and sagas",
    17: "API protocols (GraphQL, gRPC)",
    10: "edge middleware (response cache, ...)",
}


def _unavailable(name: str, issue: int) -> FeatureNotAvailable:
    return FeatureNotAvailable(name, issue, hint=f"it arrives with {ISSUES.get(issue, 'a later issue')}")


class _Placeholder(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _unavailable(cls._qualname, cls._issue)

    def __getattr__(cls, attr: str) -> Any:
        # Private and dunder names stay AttributeErrors, so introspection (hasattr, pydantic,
        # pytest) keeps working; public ones are "using the feature".
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise _unavailable(f"{cls._qualname}.{attr}", cls._issue)

    def __repr__(cls) -> str:
        return f"<not yet available: {cls._qualname} (issue {cls._issue})>"


def placeholder_class(module: str, name: str, issue: int) -> type:
    """A class that exists (importable, usable in annotations) and refuses to be used."""
    return _Placeholder(name, (), {"_qualname": f"{module}.{name}", "_issue": issue, "__module__": module})


def placeholder_function(module: str, name: str, issue: int) -> Any:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise _unavailable(f"{module}.{name}", issue)

    unavailable.__name__ = unavailable.__qualname__ = name
    unavailable.__module__ = module
    unavailable.__doc__ = f"Not available yet: arrives with issue {issue} ({ISSUES.get(issue, '')})."
    return unavailable


def install(namespace: dict[str, Any], issue: int, classes: list[str], functions: list[str] = ()) -> list[str]:
    """Define the placeholders in a module's namespace; returns their names for ``__all__``."""
    module = namespace["__name__"]
    for name in classes:
        namespace[name] = placeholder_class(module, name, issue)
    for name in functions:
        namespace[name] = placeholder_function(module, name, issue)
    return [*classes, *functions]


__all__ = ["FeatureNotAvailable"]
