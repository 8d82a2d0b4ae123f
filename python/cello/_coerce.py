"""Converters from request strings to annotated Python types, built once per parameter.

``coercer(tp, marker)`` returns ``convert(raw) -> value`` that raises ``Invalid`` with a
pydantic-style error type and message (``int_parsing``, ``greater_than_equal``, ...), so a 422
reads like FastAPI's. Common scalars are converted here without pydantic; other annotations go
through ``pydantic.TypeAdapter`` when pydantic is installed.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import re
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Union

EMPTY = object()
NoneType = type(None)
_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})


class Invalid(Exception):
    """One field error: ``type`` and ``msg`` like pydantic's; ``loc`` is relative to the field."""

    def __init__(self, type_: str, msg: str, loc: tuple[Any, ...] = (), ctx: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.type = type_
        self.msg = msg
        self.loc = loc
        self.ctx = ctx


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` / ``X | None`` → ``(X, True)``; anything else → ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not NoneType]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return tp, False


def is_sequence(tp: Any) -> bool:
    tp, _ = unwrap_optional(tp)
    return tp in (list, set, tuple, frozenset) or typing.get_origin(tp) in (list, set, tuple, frozenset)


def item_type(tp: Any) -> Any:
    tp, _ = unwrap_optional(tp)
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    return args[0] if args else str


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_fields")


def is_body_type(tp: Any) -> bool:
    """Annotations that can only come from a JSON body: models, dataclasses, dicts, lists of those."""
    tp, _ = unwrap_optional(tp)
    if is_model(tp) or (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        return True
    if tp is dict or typing.get_origin(tp) is dict or typing.is_typeddict(tp):
        return True
    if is_sequence(tp):
        return is_body_type(item_type(tp))
    return False


def _scalar(tp: Any) -> Callable[[str], Any]:
    """A converter for one string value (no constraints)."""
    if tp in (EMPTY, str, Any, object) or tp is typing.Any:
        return lambda v: v
    if tp is bool:

        def to_bool(v: str) -> bool:
            low = v.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise Invalid("bool_parsing", "Input should be a valid boolean, unable to interpret input")

        return to_bool
    if tp is int:

        def to_int(v: str) -> int:
            try:
                return int(v)
            except ValueError:
                msg = "Input should be a valid integer, unable to parse string as an integer"
                raise Invalid("int_parsing", msg) from None

        return to_int
    if tp is float:

        def to_float(v: str) -> float:
            try:
                return float(v)
            except ValueError:
                msg = "Input should be a valid number, unable to parse string as a number"
                raise Invalid("float_parsing", msg) from None

        return to_float
    if tp is uuid.UUID:

        def to_uuid(v: str) -> uuid.UUID:
            try:
                return uuid.UUID(v)
            except ValueError:
                raise Invalid("uuid_parsing", "Input should be a valid UUID, invalid character or length") from None

        return to_uuid
    if tp is decimal.Decimal:

        def to_decimal(v: str) -> decimal.Decimal:
            try:
                return decimal.Decimal(v)
            except decimal.InvalidOperation:
                raise Invalid("decimal_parsing", "Input should be a valid decimal") from None

        return to_decimal
    for kind, name in ((datetime.datetime, "datetime"), (datetime.date, "date"), (datetime.time, "time")):
        if tp is kind:

            def to_time(v: str, kind: Any = kind, name: str = name) -> Any:
                try:
                    return kind.fromisoformat(v.replace("Z", "+00:00") if kind is not datetime.date else v)
                except ValueError:
                    raise Invalid(f"{name}_parsing", f"Input should be a valid {name}") from None

            return to_time
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = list(tp)
        by_text = {str(m.value): m for m in members}
        expected = _expected([repr(m.value) for m in members])

        def to_enum(v: str) -> Any:
            m = by_text.get(v)
            if m is None:
                raise Invalid("enum", f"Input should be {expected}", ctx={"expected": expected})
            return m

        return to_enum
    if typing.get_origin(tp) is typing.Literal:
        options = typing.get_args(tp)
        by_text = {str(o).lower() if isinstance(o, bool) else str(o): o for o in options}
        expected = _expected([repr(o) for o in options])

        def to_literal(v: str) -> Any:
            if v in by_text:
                return by_text[v]
            raise Invalid("literal_error", f"Input should be {expected}", ctx={"expected": expected})

        return to_literal
    return _adapter(tp)


def _expected(options: list[str]) -> str:
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def _adapter(tp: Any) -> Callable[[Any], Any]:
    """Anything else: pydantic's validator when available, else the type's constructor."""
    try:
        from pydantic import TypeAdapter, ValidationError
    except ImportError:

        def construct(v: Any) -> Any:
            try:
                return tp(v)
            except (TypeError, ValueError) as e:
                raise Invalid("value_error", str(e)) from None

        return construct
    adapter = TypeAdapter(tp)

    def validate(v: Any) -> Any:
        try:
            return adapter.validate_python(v)
        except ValidationError as e:
            err = e.errors()[0]
            raise Invalid(err["type"], err["msg"], tuple(err.get("loc", ())), err.get("ctx")) from None

    return validate


def constraints(marker: Any) -> Callable[[Any], Any] | None:
    """The marker's ``ge/le/gt/lt/min_length/max_length/pattern`` as one check, or None."""
    if marker is None:
        return None
    checks: list[Callable[[Any], None]] = []
    for attr, op, type_, word in (
        ("gt", lambda a, b: a > b, "greater_than", "greater than"),
        ("ge", lambda a, b: a >= b, "greater_than_equal", "greater than or equal to"),
        ("lt", lambda a, b: a < b, "less_than", "less than"),
        ("le", lambda a, b: a <= b, "less_than_equal", "less than or equal to"),
    ):
        bound = getattr(marker, attr, None)
        if bound is not None:

            def check(v: Any, bound: Any = bound, op: Any = op, type_: str = type_, word: str = word) -> None:
                if not op(v, bound):
                    raise Invalid(type_, f"Input should be {word} {bound}", ctx={marker_key(type_): bound})

            checks.append(check)
    if marker.min_length is not None:
        n = marker.min_length

        def check_min(v: Any) -> None:
            if len(v) < n:
                if isinstance(v, str):
                    plural = "" if n == 1 else "s"
                    raise Invalid("string_too_short", f"String should have at least {n} character{plural}",
                                  ctx={"min_length": n})  # fmt: skip
                raise Invalid("too_short", f"List should have at least {n} item{'' if n == 1 else 's'}",
                              ctx={"min_length": n})  # fmt: skip

        checks.append(check_min)
    if marker.max_length is not None:
        m = marker.max_length

        def check_max(v: Any) -> None:
            if len(v) > m:
                if isinstance(v, str):
                    plural = "" if m == 1 else "s"
                    raise Invalid("string_too_long", f"String should have at most {m} character{plural}",
                                  ctx={"max_length": m})  # fmt: skip
                raise Invalid("too_long", f"List should have at most {m} item{'' if m == 1 else 's'}",
                              ctx={"max_length": m})  # fmt: skip

        checks.append(check_max)
    if marker.pattern is not None:
        rx = re.compile(marker.pattern)

        def check_pattern(v: Any) -> None:
            if isinstance(v, str) and not rx.search(v):
                raise Invalid("string_pattern_mismatch", f"String should match pattern '{marker.pattern}'",
                              ctx={"pattern": marker.pattern})  # fmt: skip

        checks.append(check_pattern)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def all_checks(v: Any) -> None:
        for c in checks:
            c(v)

    return all_checks


def marker_key(type_: str) -> str:
    return {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}[type_]


def coercer(tp: Any, marker: Any = None) -> Callable[[str], Any]:
    """``convert(raw)`` for one value of type ``tp`` with the marker's constraints."""
    inner, _ = unwrap_optional(tp)
    convert = _scalar(inner)
    check = constraints(marker)
    if check is None:
        return convert

    def checked(v: str) -> Any:
        value = convert(v)
        check(value)
        return value

    return checked


def sequence_coercer(tp: Any, marker: Any = None) -> Callable[[list[str]], Any]:
    """``convert(raw_values)`` for ``list[X]`` / ``set[X]`` / ``tuple[X, ...]`` from repeated keys."""
    inner, _ = unwrap_optional(tp)
    container = typing.get_origin(inner) or inner
    one = _scalar(item_type(inner))
    check = constraints(marker)

    def convert(values: list[str]) -> Any:
        out = []
        for i, v in enumerate(values):
            try:
                out.append(one(v))
            except Invalid as e:
                raise Invalid(e.type, e.msg, (i, *e.loc), e.ctx) from None
        if check is not None:
            check(out)
        return out if container is list else container(out)

    return convert


__all__ = ["EMPTY", "Invalid", "coercer", "is_body_type", "is_model", "is_sequence", "sequence_coercer"]
