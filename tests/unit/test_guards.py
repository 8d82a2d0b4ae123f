"""Guards used directly: users from request.context (dicts and objects), 401 vs 403,
require_all, composition with And/Or/Not and operators, and the error classes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cello.errors import HTTPException
from cello.guards import (
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


def req(user=None, key="user"):
    return SimpleNamespace(context={} if user is None else {key: user})


def status_of(guard, request) -> int:
    """200 when the guard lets the request through, else the status it answers with."""
    try:
        return 200 if guard(request) else 403
    except GuardError as e:
        return e.status_code


ADMIN = {"roles": ["admin", "staff"], "permissions": ["read", "write"]}
STAFF = {"roles": ["staff"], "permissions": ["read"]}


def test_errors():
    e = GuardError("nope")
    assert isinstance(e, HTTPException)
    assert (e.status_code, e.message, e.detail) == (403, "nope", "nope")
    assert GuardError("x", status_code=429).status_code == 429
    assert ForbiddenError().status_code == 403
    u = UnauthorizedError()
    assert u.status_code == 401
    assert u.headers == {"WWW-Authenticate": "Bearer"}
    assert UnauthorizedError("x", www_authenticate='Basic realm="a"').headers["WWW-Authenticate"] == 'Basic realm="a"'
    assert UnauthorizedError("x", www_authenticate=None).headers == {}
    assert isinstance(ForbiddenError(), GuardError) and isinstance(UnauthorizedError(), GuardError)


def test_authenticated():
    g = Authenticated()
    assert status_of(g, req(STAFF)) == 200
    assert status_of(g, req()) == 401
    assert status_of(g, SimpleNamespace()) == 401  # no context at all
    assert status_of(Authenticated(user_key="principal"), req(STAFF, key="principal")) == 200
    assert status_of(Authenticated(user_key="principal"), req(STAFF)) == 401


def test_role_guard_any_and_all():
    assert status_of(RoleGuard(["admin", "staff"]), req(STAFF)) == 200
    assert status_of(RoleGuard(["admin"]), req(STAFF)) == 403
    assert status_of(RoleGuard(["admin", "staff"], require_all=True), req(STAFF)) == 403
    assert status_of(RoleGuard(["admin", "staff"], require_all=True), req(ADMIN)) == 200
    assert status_of(RoleGuard("admin"), req(ADMIN)) == 200  # a single str is one role
    assert status_of(RoleGuard("admin"), req()) == 401


def test_role_guard_reads_objects_and_custom_keys():
    user = SimpleNamespace(groups=("editors",))
    assert status_of(RoleGuard("editors", role_key="groups"), req(user)) == 200
    assert status_of(RoleGuard("editors"), req(user)) == 403  # no "roles" attribute
    assert status_of(RoleGuard("admin"), req({"roles": "admin"})) == 200  # a str role
    assert status_of(RoleGuard("adm"), req({"roles": "admin"})) == 403  # not a substring match
    assert status_of(RoleGuard("admin", user_key="me"), req(ADMIN, key="me")) == 200


def test_permission_guard():
    assert status_of(PermissionGuard(["read", "write"]), req(ADMIN)) == 200
    assert status_of(PermissionGuard(["read", "write"]), req(STAFF)) == 403  # require_all by default
    assert status_of(PermissionGuard(["read", "write"], require_all=False), req(STAFF)) == 200
    assert status_of(PermissionGuard("delete"), req(ADMIN)) == 403
    assert status_of(PermissionGuard("read"), req()) == 401
    user = SimpleNamespace(scopes={"a"})
    assert status_of(PermissionGuard("a", permission_key="scopes"), req(user)) == 200


def test_empty_requirements_are_refused():
    with pytest.raises(ValueError):
        RoleGuard([])
    with pytest.raises(ValueError):
        PermissionGuard([])
    with pytest.raises(ValueError):
        And()
    with pytest.raises(ValueError):
        Or()


def test_custom_guards():
    class Weekday(Guard):
        def __init__(self, ok):
            self.ok = ok

        def check(self, request):
            return self.ok

    class CallGuard(Guard):
        def __call__(self, request):
            return request.context.get("flag", False)

    assert status_of(Weekday(True), req()) == 200
    assert status_of(Weekday(False), req()) == 403
    assert status_of(CallGuard(), SimpleNamespace(context={"flag": True})) == 200
    with pytest.raises(NotImplementedError):
        Guard()(req())


def test_and():
    g = And(Authenticated(), RoleGuard("staff"), PermissionGuard("read"))
    assert status_of(g, req(STAFF)) == 200
    assert status_of(g, req()) == 401
    assert status_of(And(RoleGuard("staff"), PermissionGuard("write")), req(STAFF)) == 403
    assert status_of(And(lambda r: True, lambda r: False), req()) == 403


def test_or():
    g = Or(RoleGuard("admin"), PermissionGuard("read"))
    assert status_of(g, req(STAFF)) == 200
    assert status_of(Or(RoleGuard("admin"), PermissionGuard("delete")), req(STAFF)) == 403
    assert status_of(g, req()) == 401  # every branch lacked a user
    assert status_of(Or(lambda r: False, RoleGuard("admin")), req()) == 401  # logging in could help
    assert status_of(Or(lambda r: False, RoleGuard("admin")), req(STAFF)) == 403
    assert status_of(Or(lambda r: False, lambda r: True), req()) == 200


def test_not():
    assert status_of(Not(RoleGuard("banned")), req(STAFF)) == 200
    assert status_of(Not(RoleGuard("staff")), req(STAFF)) == 403
    assert status_of(Not(Authenticated()), req()) == 200  # guests only
    assert status_of(Not(Authenticated()), req(STAFF)) == 403
    assert status_of(Not(lambda r: False), req()) == 200


def test_operators():
    g = (RoleGuard("admin") | RoleGuard("staff")) & ~RoleGuard("banned")
    assert isinstance(g, And)
    assert status_of(g, req(STAFF)) == 200
    assert status_of(g, req({"roles": ["staff", "banned"]})) == 403
    assert status_of(g, req()) == 401
    mixed = (lambda r: True) & Authenticated()
    assert isinstance(mixed, And)


def test_async_guards_are_refused_in_compositions():
    async def sneaky(request):
        return False

    with pytest.raises(TypeError, match="synchronous"):
        And(sneaky)(req())


def test_non_guard_exceptions_propagate():
    def broken(request):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        Or(broken, lambda r: True)(req())
    with pytest.raises(RuntimeError):
        Not(broken)(req())


def test_reprs():
    assert repr(RoleGuard(["a"])) == "RoleGuard(['a'], require_all=False)"
    assert "Authenticated" in repr(Or(Authenticated(), Not(PermissionGuard("x"))))


# ---- issue 11: the published module names --------------------------------------------------


def test_published_guard_names():
    import cello.guards as g
    from cello.guards import ForbiddenError, UnauthorizedError

    assert g.Role is g.RoleGuard and g.Permission is g.PermissionGuard

    class Req:
        def __init__(self, user):
            self.context = {"user": user} if user is not None else {}

    assert g.verify_guards([g.Role(["admin"])], Req({"roles": ["admin"]})) is True
    with pytest.raises(ForbiddenError):
        g.verify_guards([g.Role(["admin"])], Req({"roles": []}))
    with pytest.raises(UnauthorizedError):
        g.verify_guards([g.Permission(["read"])], Req(None))
    with pytest.raises(ForbiddenError):
        g.verify_guards([lambda r: False], Req({}))
    assert g.constant_time_compare("tok", "tok") and not g.constant_time_compare(b"tok", b"tol")
