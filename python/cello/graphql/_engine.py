"""Schemas from decorated Python functions and their execution with graphql-core.

graphql-core (the port of the reference implementation) parses, validates and executes, so the
spec's semantics (fragments, variables and their coercion, @include/@skip, aliases,
introspection, errors with locations and path, partial data) are the reference's. Parsed and
validated documents are cached per query text (bounded LRU), so a repeated query skips both.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import graphql as g

from ._dataloader import current_states
from ._types import TypeRegistry

__all__ = ["Field", "GraphQL", "Mutation", "Query", "Schema", "Subscription"]

_KINDS = ("query", "mutation", "subscription")
CACHE_SIZE = 512


@dataclass
class _Spec:
    kind: str | None
    name: str | None = None
    description: str | None = None
    deprecation_reason: str | None = None


# Resolvers decorated in this process, by root kind: the schema of ``enable_graphql()``
# when no schema is given (the published style).
_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {k: {} for k in _KINDS}
_REGISTRY_LOCK = threading.Lock()


def _decorator(kind: str) -> Callable[..., Any]:
    def decorate(
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        deprecation_reason: str | None = None,
    ) -> Any:
        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(f):
                raise TypeError(f"@{kind.capitalize()} decorates a resolver function")
            spec = _Spec(kind, name or f.__name__, description, deprecation_reason)
            f.__cello_graphql__ = spec  # type: ignore[attr-defined]
            with _REGISTRY_LOCK:
                _REGISTRY[kind][spec.name] = f  # type: ignore[index]
            return f

        return register(fn) if fn is not None else register

    decorate.__name__ = decorate.__qualname__ = kind.capitalize()
    decorate.__doc__ = (
        f"``@{kind.capitalize()}`` (or ``@{kind.capitalize()}(name=..., description=...)``): the function is a "
        f"field of the {kind} root type. It takes ``info`` first (optional) and typed arguments; the return "
        "annotation gives the field's type."
    )
    return decorate


Query = _decorator("query")
Mutation = _decorator("mutation")
Subscription = _decorator("subscription")


def Field(  # noqa: N802 - a published name
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    deprecation_reason: str | None = None,
) -> Any:
    """``@Field`` on a method of a dataclass/pydantic model: a computed field of its object type
    (arguments from the method's signature, ``info`` optional after ``self``)."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__cello_graphql_field__ = _Spec(None, name, description, deprecation_reason)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def _entries(items: tuple[Any, ...]) -> list[tuple[str, Callable[..., Any], _Spec]]:
    """Resolver functions, or classes/instances whose public methods are resolvers."""
    out = []
    for item in items:
        if inspect.isclass(item):
            item = item()
        if callable(item) and (
            inspect.isfunction(item) or inspect.ismethod(item) or hasattr(item, "__cello_graphql__")
        ):
            spec = getattr(item, "__cello_graphql__", None) or _Spec(None, item.__name__)
            out.append((spec.name or item.__name__, item, spec))
            continue
        for attr, member in inspect.getmembers(item, callable):
            if not attr.startswith("_"):
                spec = getattr(member, "__cello_graphql__", None) or _Spec(None, attr)
                out.append((spec.name or attr, member, spec))
    return out


class GraphQL:
    """A schema of resolvers and its executor: ``add_query/add_mutation/add_subscription``,
    then ``await gql.execute(query, variables=None, operation_name=None)``."""

    def __init__(self) -> None:
        self._roots: dict[str, dict[str, tuple[Callable[..., Any], _Spec]]] = {k: {} for k in _KINDS}
        self._schema: g.GraphQLSchema | None = None
        self._documents: OrderedDict[tuple[str, bool], tuple[g.DocumentNode | None, list[g.GraphQLError]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    # ---- building ------------------------------------------------------------------------
    def _add(self, kind: str, fn: Callable[..., Any], name: str | None) -> GraphQL:
        for entry_name, f, spec in _entries((fn,)):
            self._roots[kind][name or entry_name] = (f, spec)
        self._schema = None
        return self

    def add_query(self, fn: Callable[..., Any], name: str | None = None) -> GraphQL:
        return self._add("query", fn, name)

    def add_mutation(self, fn: Callable[..., Any], name: str | None = None) -> GraphQL:
        return self._add("mutation", fn, name)

    def add_subscription(self, fn: Callable[..., Any], name: str | None = None) -> GraphQL:
        return self._add("subscription", fn, name)

    @classmethod
    def from_decorated(cls) -> GraphQL:
        """The resolvers decorated with ``@Query``/``@Mutation``/``@Subscription`` so far."""
        gql = cls()
        with _REGISTRY_LOCK:
            for kind in _KINDS:
                for name, fn in _REGISTRY[kind].items():
                    gql._roots[kind][name] = (fn, fn.__cello_graphql__)  # type: ignore[attr-defined]
        return gql

    @property
    def schema(self) -> g.GraphQLSchema:
        """The graphql-core schema (built on first use, and again after an ``add_*``)."""
        with self._lock:
            if self._schema is None:
                self._schema = self._build()
                self._documents.clear()
            return self._schema

    def _build(self) -> g.GraphQLSchema:
        if not self._roots["query"]:
            raise TypeError("a GraphQL schema needs at least one query field (@Query or add_query)")
        reg = TypeRegistry()
        roots = {}
        for kind in _KINDS:
            fields = {
                name: reg.field(fn, spec, subscription=kind == "subscription")
                for name, (fn, spec) in self._roots[kind].items()
            }
            roots[kind] = g.GraphQLObjectType(kind.capitalize(), fields) if fields else None
        schema = g.GraphQLSchema(roots["query"], roots["mutation"], roots["subscription"])
        errors = g.validate_schema(schema)
        if errors:
            raise TypeError("invalid GraphQL schema: " + "; ".join(e.message for e in errors))
        return schema

    def sdl(self) -> str:
        """The schema in the GraphQL schema definition language."""
        return g.print_schema(self.schema)

    # ---- documents -------------------------------------------------------------------------
    def document(self, query: str, *, introspection: bool = True) -> tuple[g.DocumentNode | None, list[g.GraphQLError]]:
        """The parsed document and its validation errors (cached per query text)."""
        schema = self.schema
        key = (query, introspection)
        with self._lock:
            hit = self._documents.get(key)
            if hit is not None:
                self._documents.move_to_end(key)
                return hit
        try:
            doc: g.DocumentNode | None = g.parse(query)
        except g.GraphQLError as exc:
            entry: tuple[g.DocumentNode | None, list[g.GraphQLError]] = (None, [exc])
        else:
            rules = list(g.specified_rules)
            if not introspection:
                rules.append(g.NoSchemaIntrospectionCustomRule)
            entry = (doc, g.validate(schema, doc, rules))  # type: ignore[arg-type]
        with self._lock:
            self._documents[key] = entry
            while len(self._documents) > CACHE_SIZE:
                self._documents.popitem(last=False)
        return entry

    # ---- execution -------------------------------------------------------------------------
    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        context: Any = None,
        root: Any = None,
    ) -> dict[str, Any]:
        """Run a query or mutation; the response map (``data``, ``errors``, ``extensions``)."""
        result, _ = await self.run(query, variables, operation_name, context=context, root=root)
        return result

    async def run(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        context: Any = None,
        root: Any = None,
        introspection: bool = True,
        max_depth: int | None = None,
        max_complexity: int | None = None,
        tracing: bool = False,
        allowed: tuple[str, ...] = ("query", "mutation"),
    ) -> tuple[dict[str, Any], str | None]:
        """``(response map, refusal)``: refusal is ``None`` when executed, else ``"invalid"``
        (parse/validation/variables: nothing ran), ``"limit"`` (depth/complexity) or
        ``"method"`` (an operation kind not ``allowed`` here)."""
        doc, errors = self.document(query, introspection=introspection)
        if errors or doc is None:
            return {"errors": [e.formatted for e in errors]}, "invalid"
        op = g.get_operation_ast(doc, operation_name)
        if op is None:
            msg = (
                f"unknown operation named {operation_name!r}"
                if operation_name
                else "the document has several operations: give operationName"
            )
            return {"errors": [{"message": msg}]}, "invalid"
        kind = op.operation.value
        if kind not in allowed:
            return {"errors": [{"message": f"a {kind} operation cannot be executed here"}]}, "method"
        limit_errors = check_limits(doc, op, max_depth, max_complexity)
        if limit_errors:
            return {"errors": limit_errors}, "limit"
        tracer = _Tracer() if tracing else None
        token = current_states.set({})
        try:
            result = g.execute(
                self.schema,
                doc,
                root_value=root,
                context_value=context,
                variable_values=variables,
                operation_name=operation_name,
                middleware=[tracer] if tracer else None,
            )
            if inspect.isawaitable(result):
                result = await result
        finally:
            current_states.reset(token)
        out = result.formatted
        refusal = None
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            # A request error (variables could not be coerced): nothing ran, so no "data" entry.
            out.pop("data", None)
            refusal = "invalid"
        if tracer is not None:
            out.setdefault("extensions", {})["tracing"] = tracer.finish()
        return out, refusal

    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        context: Any = None,
        root: Any = None,
        introspection: bool = True,
        max_depth: int | None = None,
        max_complexity: int | None = None,
    ) -> AsyncIterator[dict[str, Any]] | dict[str, Any]:
        """A subscription's stream of response maps, or one response map with its errors."""
        doc, errors = self.document(query, introspection=introspection)
        if errors or doc is None:
            return {"errors": [e.formatted for e in errors]}
        op = g.get_operation_ast(doc, operation_name)
        if op is None:
            return {"errors": [{"message": "no operation to run (give operationName)"}]}
        limit_errors = check_limits(doc, op, max_depth, max_complexity)
        if limit_errors:
            return {"errors": limit_errors}
        if op.operation != g.OperationType.SUBSCRIPTION:
            return await self.execute(query, variables, operation_name, context=context, root=root)
        result = g.subscribe(
            self.schema, doc, root_value=root, context_value=context, variable_values=variables,
            operation_name=operation_name,
        )  # fmt: skip
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, g.ExecutionResult):
            return result.formatted
        return _formatted(result)


async def _formatted(stream: Any) -> AsyncIterator[dict[str, Any]]:
    try:
        async for item in stream:
            yield item.formatted
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


class Schema:
    """``Schema().query(...).mutation(...).subscription(...).build()`` → a ``GraphQL``.

    Each takes resolver functions, or classes whose public methods are resolvers."""

    def __init__(self) -> None:
        self._gql = GraphQL()

    def query(self, *resolvers: Any) -> Schema:
        for r in resolvers:
            self._gql.add_query(r)
        return self

    def mutation(self, *resolvers: Any) -> Schema:
        for r in resolvers:
            self._gql.add_mutation(r)
        return self

    def subscription(self, *resolvers: Any) -> Schema:
        for r in resolvers:
            self._gql.add_subscription(r)
        return self

    def build(self) -> GraphQL:
        """Check the schema now (type errors raise here) and return the executor."""
        _ = self._gql.schema
        return self._gql


# ---- limits ------------------------------------------------------------------------------


def check_limits(
    doc: g.DocumentNode, op: g.OperationDefinitionNode, max_depth: int | None, max_complexity: int | None
) -> list[dict[str, Any]]:
    """Depth (nesting of fields) and complexity (fields selected, fragments expanded, ``__typename``
    free) of the operation; errors when past the limits. Runs on a validated document, so
    fragment spreads are known and acyclic."""
    if max_depth is None and max_complexity is None:
        return []
    fragments = {d.name.value: d for d in doc.definitions if isinstance(d, g.FragmentDefinitionNode)}

    def walk(selection_set: g.SelectionSetNode | None, depth: int) -> tuple[int, int]:
        deepest, count = depth, 0
        for sel in selection_set.selections if selection_set else ():
            if isinstance(sel, g.FieldNode):
                if sel.name.value == "__typename":
                    continue
                d, c = walk(sel.selection_set, depth + 1)
                deepest, count = max(deepest, d), count + 1 + c
            else:
                sub = (
                    fragments[sel.name.value].selection_set
                    if isinstance(sel, g.FragmentSpreadNode)
                    else sel.selection_set
                )
                d, c = walk(sub, depth)
                deepest, count = max(deepest, d), count + c
        return deepest, count

    depth, complexity = walk(op.selection_set, 0)
    errors = []
    if max_depth is not None and depth > max_depth:
        errors.append({
            "message": f"the query is {depth} levels deep; this endpoint accepts at most {max_depth}",
            "extensions": {"code": "QUERY_TOO_DEEP", "depth": depth, "max_depth": max_depth},
        })  # fmt: skip
    if max_complexity is not None and complexity > max_complexity:
        errors.append({
            "message": f"the query selects {complexity} fields; this endpoint accepts at most {max_complexity}",
            "extensions": {"code": "QUERY_TOO_COMPLEX", "complexity": complexity, "max_complexity": max_complexity},
        })  # fmt: skip
    return errors


# ---- tracing -----------------------------------------------------------------------------


class _Tracer:
    """graphql-core middleware recording the Apollo tracing extension (format version 1):
    start/end of the operation and every resolver's offset and duration in nanoseconds."""

    def __init__(self) -> None:
        self.start_wall = time.time()
        self.start = time.perf_counter_ns()
        self.resolvers: list[dict[str, Any]] = []

    def resolve(self, next_: Callable[..., Any], root: Any, info: g.GraphQLResolveInfo, **args: Any) -> Any:
        started = time.perf_counter_ns()
        result = next_(root, info, **args)
        if inspect.isawaitable(result):

            async def timed() -> Any:
                try:
                    return await result
                finally:
                    self._record(info, started)

            return timed()
        self._record(info, started)
        return result

    def _record(self, info: g.GraphQLResolveInfo, started: int) -> None:
        self.resolvers.append({
            "path": list(info.path.as_list()),
            "parentType": info.parent_type.name,
            "fieldName": info.field_name,
            "returnType": str(info.return_type),
            "startOffset": started - self.start,
            "duration": time.perf_counter_ns() - started,
        })  # fmt: skip

    def finish(self) -> dict[str, Any]:
        end = time.perf_counter_ns()
        fmt = "%Y-%m-%dT%H:%M:%S"
        end_wall = self.start_wall + (end - self.start) / 1e9

        def stamp(t: float) -> str:
            return time.strftime(fmt, time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"

        return {
            "version": 1,
            "startTime": stamp(self.start_wall),
            "endTime": stamp(end_wall),
            "duration": end - self.start,
            "execution": {"resolvers": self.resolvers},
        }
