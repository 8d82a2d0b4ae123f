"""Python annotations → GraphQL types (graphql-core type objects).

A plain annotation is non-null; ``Optional[X]`` / ``X | None`` is nullable; ``list[X]`` is a
list; dataclasses and pydantic models become object types (output) or input object types
(arguments); ``enum.Enum`` subclasses become enums whose values are the members.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import graphql as g

_SCALARS: dict[Any, g.GraphQLScalarType] = {
    int: g.GraphQLInt,
    float: g.GraphQLFloat,
    str: g.GraphQLString,
    bool: g.GraphQLBoolean,
}

_ITERATORS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncGenerator,
    collections.abc.AsyncIterable,
    typing.AsyncIterator,
    typing.AsyncGenerator,
    typing.AsyncIterable,
)


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_fields") and hasattr(tp, "model_validate")


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_pydantic(tp))


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)) and len(args) == 1:
            return args[0], True
        raise TypeError(f"GraphQL has no type for the union {tp!r} (only Optional[X] is supported)")
    return tp, False


def model_fields(tp: type) -> list[tuple[str, Any, Any, str | None]]:
    """(name, annotation, default or inspect.Parameter.empty, description) of a model's fields."""
    hints = typing.get_type_hints(tp)
    out = []
    if dataclasses.is_dataclass(tp):
        for f in dataclasses.fields(tp):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = inspect.Parameter.empty
            out.append((f.name, hints.get(f.name, f.type), default, f.metadata.get("description")))
    else:
        for name, info in tp.model_fields.items():
            default = inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
            out.append((name, hints.get(name, info.annotation), default, info.description))
    return out


class TypeRegistry:
    """Builds each named type once per schema (models may refer to each other)."""

    def __init__(self) -> None:
        self.outputs: dict[Any, g.GraphQLNamedType] = {}
        self.inputs: dict[Any, g.GraphQLNamedType] = {}
        self.names: dict[str, Any] = {}

    def _claim(self, name: str, owner: Any) -> str:
        seen = self.names.setdefault(name, owner)
        if seen is not owner:
            raise TypeError(f"two different Python types map to the GraphQL type name {name!r}")
        return name

    # ---- outputs -----------------------------------------------------------------------
    def output(self, tp: Any, where: str) -> g.GraphQLOutputType:
        inner, nullable = _unwrap_optional(tp)
        t = self._output_nullable(inner, where)
        return t if nullable else g.GraphQLNonNull(t)

    def _output_nullable(self, tp: Any, where: str) -> Any:
        if isinstance(tp, (g.GraphQLScalarType, g.GraphQLObjectType, g.GraphQLEnumType)):
            return tp
        if tp in _SCALARS:
            return _SCALARS[tp]
        origin = typing.get_origin(tp)
        if origin in (list, collections.abc.Sequence, typing.List, tuple, set, frozenset):  # noqa: UP006
            args = typing.get_args(tp)
            if not args:
                raise TypeError(f"{where}: a list needs its item type (list[X])")
            return g.GraphQLList(self.output(args[0], where))
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self.enum(tp)
        if is_model(tp):
            return self.object(tp)
        if tp is inspect.Parameter.empty or tp is None or tp is type(None):
            raise TypeError(f"{where}: needs a return type annotation")
        raise TypeError(f"{where}: no GraphQL type for {tp!r}")

    def enum(self, tp: type[enum.Enum]) -> g.GraphQLEnumType:
        if tp not in self.outputs:
            self._claim(tp.__name__, tp)
            values = {m.name: g.GraphQLEnumValue(m, description=None) for m in tp}
            self.outputs[tp] = g.GraphQLEnumType(tp.__name__, values, description=_own_doc(tp))
            self.inputs[tp] = self.outputs[tp]
        return self.outputs[tp]  # type: ignore[return-value]

    def object(self, tp: type) -> g.GraphQLObjectType:
        if tp in self.outputs:
            return self.outputs[tp]  # type: ignore[return-value]
        name = self._claim(getattr(tp, "__graphql_name__", tp.__name__), tp)

        def fields() -> dict[str, g.GraphQLField]:
            out = {
                fname: g.GraphQLField(self.output(ann, f"{tp.__name__}.{fname}"), description=desc)
                for fname, ann, _default, desc in model_fields(tp)
            }
            # Methods marked with @Field are computed fields (arguments from their signature).
            for attr, member in inspect.getmembers(tp):
                spec = getattr(member, "__cello_graphql_field__", None)
                if spec is not None:
                    out[spec.name or attr] = self.field(member, spec, bound=True)
            return out

        doc = _own_doc(tp)
        if dataclasses.is_dataclass(tp) and doc and doc.startswith(tp.__name__ + "("):
            doc = None  # the generated dataclass signature is no description
        self.outputs[tp] = g.GraphQLObjectType(name, fields, description=doc)
        return self.outputs[tp]  # type: ignore[return-value]

    # ---- inputs ------------------------------------------------------------------------
    def input(self, tp: Any, where: str) -> g.GraphQLInputType:
        inner, nullable = _unwrap_optional(tp)
        t = self._input_nullable(inner, where)
        return t if nullable else g.GraphQLNonNull(t)

    def _input_nullable(self, tp: Any, where: str) -> Any:
        if isinstance(tp, (g.GraphQLScalarType, g.GraphQLInputObjectType, g.GraphQLEnumType)):
            return tp
        if tp in _SCALARS:
            return _SCALARS[tp]
        origin = typing.get_origin(tp)
        if origin in (list, collections.abc.Sequence, typing.List, tuple, set, frozenset):  # noqa: UP006
            args = typing.get_args(tp)
            if not args:
                raise TypeError(f"{where}: a list needs its item type (list[X])")
            return g.GraphQLList(self.input(args[0], where))
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self.enum(tp)
        if is_model(tp):
            return self.input_object(tp)
        if tp is inspect.Parameter.empty:
            raise TypeError(f"{where}: needs a type annotation")
        raise TypeError(f"{where}: no GraphQL input type for {tp!r}")

    def input_object(self, tp: type) -> g.GraphQLInputObjectType:
        if tp in self.inputs:
            return self.inputs[tp]  # type: ignore[return-value]
        base = getattr(tp, "__graphql_name__", tp.__name__)
        name = self._claim(base if base.endswith("Input") else base + "Input", ("input", tp))

        def fields() -> dict[str, g.GraphQLInputField]:
            return {
                fname: g.GraphQLInputField(
                    self.input(ann, f"{tp.__name__}.{fname}"),
                    default_value=g.Undefined if default is inspect.Parameter.empty else _to_input(default),
                    description=desc,
                )
                for fname, ann, default, desc in model_fields(tp)
            }

        self.inputs[tp] = g.GraphQLInputObjectType(name, fields, out_type=lambda d: _build(tp, d))
        return self.inputs[tp]  # type: ignore[return-value]

    # ---- fields from functions -----------------------------------------------------------
    def field(self, fn: Callable[..., Any], spec: Any, *, bound: bool = False, subscription: bool = False) -> Any:
        where = getattr(fn, "__qualname__", repr(fn))
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        params = list(sig.parameters.values())
        if bound and params and params[0].name == "self":
            params = params[1:]
        wants_info = bool(params) and params[0].name == "info"
        if wants_info:
            params = params[1:]
        args: dict[str, g.GraphQLArgument] = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{where}: *args/**kwargs cannot be GraphQL arguments")
            ann = hints.get(p.name, p.annotation)
            if p.default is not p.empty and p.default is None:
                ann, _ = _unwrap_optional(ann)
                ann = typing.Optional[ann]  # noqa: UP045 - also for graphql-core type objects
            args[p.name] = g.GraphQLArgument(
                self.input(ann, f"{where}({p.name})"),
                default_value=g.Undefined if p.default is p.empty else _to_input(p.default),
            )
        ret = hints.get("return", sig.return_annotation)
        if subscription:
            if typing.get_origin(ret) not in _ITERATORS:
                raise TypeError(f"{where}: a subscription returns AsyncIterator[X] (an async generator)")
            ret = typing.get_args(ret)[0]
        out_type = self.output(ret, where)
        call = _caller(fn, wants_info, bound, {p.name for p in params})
        desc = spec.description or inspect.getdoc(fn) or None
        if subscription:
            return g.GraphQLField(
                out_type,
                args,
                resolve=lambda event, _info, **_kw: event,
                subscribe=call,
                description=desc,
                deprecation_reason=spec.deprecation_reason,
            )
        return g.GraphQLField(
            out_type, args, resolve=call, description=desc, deprecation_reason=spec.deprecation_reason
        )


def _caller(fn: Callable[..., Any], wants_info: bool, bound: bool, names: set[str]) -> Callable[..., Any]:
    if bound:

        def resolve_method(parent: Any, info: Any, **kwargs: Any) -> Any:
            method = getattr(parent, fn.__name__)
            return method(info, **kwargs) if wants_info else method(**kwargs)

        return resolve_method

    def resolve(_parent: Any, info: Any, **kwargs: Any) -> Any:
        return fn(info, **kwargs) if wants_info else fn(**kwargs)

    return resolve


def _own_doc(tp: type) -> str | None:
    """The class's own docstring (not one inherited from ``Enum`` or ``BaseModel``)."""
    doc = tp.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _build(tp: type, data: dict[str, Any]) -> Any:
    return tp.model_validate(data) if _is_pydantic(tp) else tp(**data)


def _to_input(value: Any) -> Any:
    """A Python default → a value graphql-core can print in the schema (introspection)."""
    if isinstance(value, enum.Enum):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value
