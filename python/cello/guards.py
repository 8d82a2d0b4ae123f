"""Guards: checks that run before a handler and answer 401/403 when they fail.

A guard is any callable ``guard(request) -> bool``: ``True`` lets the request
through, ``False`` answers 403, and raising a ``GuardError`` answers with its
status (``UnauthorizedError`` 401, ``ForbiddenError`` 403). Subclass ``Guard``
and override ``check(request)`` (or ``__call__``). Guards are synchronous.

The built-in guards read the authenticated user from ``request.context``
(``request.context["user"]`` by default, set by authentication middleware): a
dict or an object whose roles / permissions are a key or attribute holding a
list (or a single string). No user → 401; a user without what is required → 403.
Guards combine with ``And``, ``Or``, ``Not`` or the ``&``, ``|``, ``~`` operators.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import HTTPException

__all__ = [
    "And",
    "Authenticated",
    "ForbiddenError",
    "Guard",
    "GuardError",
    "Not",
    "Or",
    "Permission",
    "PermissionGuard",
    "Role",
    "RoleGuard",
    "UnauthorizedError",
    "constant_time_compare",
    "verify_guards",
]


class GuardError(HTTPException):
    """A failed guard: answered with ``status_code`` (403 by default) as problem+json."""

    def __init__(self, message: str = "access denied", status_code: int = 403, headers: dict | None = None) -> None:
        super().__init__(status_code, message, headers)
        self.message = message


class ForbiddenError(GuardError):
    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(message, 403)


class UnauthorizedError(GuardError):
    """401. RFC 9110 wants a ``WWW-Authenticate`` challenge with every 401; the default is
    ``Bearer``. Pass another scheme (e.g. ``'Basic realm="app"'``) or ``None`` for none."""

    def __init__(self, message: str = "authentication required", www_authenticate: str | None = "Bearer") -> None:
        super().__init__(message, 401, {"WWW-Authenticate": www_authenticate} if www_authenticate else None)


def _context(request: Any) -> Mapping[str, Any]:
    ctx = getattr(request, "context", None)
    return ctx if isinstance(ctx, Mapping) else {}


def _attr(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _names(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, Iterable):
        return {str(v) for v in value}
    return {str(value)}


def _wanted(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    if not names:
        raise ValueError(f"a guard needs at least one {what}")
    return names


def _passes(guard: Callable[[Any], Any], request: Any) -> bool:
    result = guard(request)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(f"guard {guard!r} returned an awaitable: guards must be synchronous")
    return bool(result)


class Guard:
    """Base class: override ``check(request) -> bool`` (or ``__call__``)."""

    def check(self, request: Any) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement check(request)")

    def __call__(self, request: Any) -> bool:
        return self.check(request)

    def __and__(self, other: Callable[[Any], Any]) -> And:
        return And(self, other)

    def __rand__(self, other: Callable[[Any], Any]) -> And:
        return And(other, self)

    def __or__(self, other: Callable[[Any], Any]) -> Or:
        return Or(self, other)

    def __ror__(self, other: Callable[[Any], Any]) -> Or:
        return Or(other, self)

    def __invert__(self) -> Not:
        return Not(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Authenticated(Guard):
    """Passes when ``request.context[user_key]`` is set; otherwise 401."""

    def __init__(self, user_key: str = "user") -> None:
        self.user_key = user_key

    def user(self, request: Any) -> Any:
        user = _context(request).get(self.user_key)
        if user is None:
            raise UnauthorizedError()
        return user

    def check(self, request: Any) -> bool:
        self.user(request)
        return True

    def __repr__(self) -> str:
        return f"Authenticated(user_key={self.user_key!r})"


class RoleGuard(Authenticated):
    """The user has any of ``roles`` (all of them with ``require_all=True``); else 403."""

    def __init__(
        self, roles: str | Iterable[str], require_all: bool = False, user_key: str = "user", role_key: str = "roles"
    ) -> None:
        super().__init__(user_key)
        self.roles = _wanted(roles, "role")
        self.require_all = require_all
        self.role_key = role_key

    def check(self, request: Any) -> bool:
        held = _names(_attr(self.user(request), self.role_key))
        ok = all(r in held for r in self.roles) if self.require_all else any(r in held for r in self.roles)
        if not ok:
            raise ForbiddenError("missing a required role")
        return True

    def __repr__(self) -> str:
        return f"RoleGuard({list(self.roles)!r}, require_all={self.require_all!r})"


class PermissionGuard(Authenticated):
    """The user has all of ``permissions`` (any of them with ``require_all=False``); else 403."""

    def __init__(
        self,
        permissions: str | Iterable[str],
        require_all: bool = True,
        user_key: str = "user",
        permission_key: str = "permissions",
    ) -> None:
        super().__init__(user_key)
        self.permissions = _wanted(permissions, "permission")
        self.require_all = require_all
        self.permission_key = permission_key

    def check(self, request: Any) -> bool:
        held = _names(_attr(self.user(request), self.permission_key))
        wanted = self.permissions
        ok = all(p in held for p in wanted) if self.require_all else any(p in held for p in wanted)
        if not ok:
            raise ForbiddenError("missing a required permission")
        return True

    def __repr__(self) -> str:
        return f"PermissionGuard({list(self.permissions)!r}, require_all={self.require_all!r})"


class And(Guard):
    """Every guard passes (checked in order; the first failure answers)."""

    def __init__(self, *guards: Callable[[Any], Any]) -> None:
        if not guards:
            raise ValueError("And() needs at least one guard")
        self.guards = guards

    def check(self, request: Any) -> bool:
        for guard in self.guards:
            if not _passes(guard, request):
                raise ForbiddenError("access denied")
        return True

    def __repr__(self) -> str:
        return f"And({', '.join(map(repr, self.guards))})"


class Or(Guard):
    """At least one guard passes. When none does, the answer is 401 if some guard failed for
    lack of a user (logging in could help), else the first failure (403)."""

    def __init__(self, *guards: Callable[[Any], Any]) -> None:
        if not guards:
            raise ValueError("Or() needs at least one guard")
        self.guards = guards

    def check(self, request: Any) -> bool:
        errors: list[GuardError] = []
        for guard in self.guards:
            try:
                if _passes(guard, request):
                    return True
            except GuardError as e:
                errors.append(e)
            else:
                errors.append(ForbiddenError("access denied"))
        for e in errors:
            if e.status_code == 401:
                raise e  # authenticating could let the request through
        raise errors[0]

    def __repr__(self) -> str:
        return f"Or({', '.join(map(repr, self.guards))})"


class Not(Guard):
    """Passes when ``guard`` fails (returns False or raises a ``GuardError``, including 401:
    ``Not(Authenticated())`` lets only anonymous requests through); else 403."""

    def __init__(self, guard: Callable[[Any], Any]) -> None:
        self.guard = guard

    def check(self, request: Any) -> bool:
        try:
            passed = _passes(self.guard, request)
        except GuardError:
            return True
        if passed:
            raise ForbiddenError("access denied")
        return True

    def __repr__(self) -> str:
        return f"Not({self.guard!r})"


# The published 1.x names.
Role = RoleGuard
Permission = PermissionGuard


def verify_guards(guards: Iterable[Callable[[Any], Any]], request: Any) -> bool:
    """Run ``guards`` as a route does: the first failure raises its ``GuardError``
    (``UnauthorizedError`` 401, ``ForbiddenError`` 403; a guard returning ``False`` is a 403);
    ``True`` when all pass."""
    from .params import _run_guards

    _run_guards(list(guards), request)
    return True


def constant_time_compare(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets in time independent of where they differ (``hmac.compare_digest``)."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)
