"""Services from Python: ``GrpcService`` subclasses with ``@grpc_method`` handlers, the
published ``add_grpc_service(name, methods)`` form, and the method table a server serves."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

from ._status import GrpcError, StatusCode, _pairs

UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI = "unary", "server_stream", "client_stream", "bidi"


def _kind(client: bool, server: bool) -> str:
    return {(False, False): UNARY, (False, True): SERVER_STREAM, (True, False): CLIENT_STREAM}.get(
        (client, server), BIDI
    )


def grpc_method(
    func: Callable[..., Any] | None = None,
    *,
    stream: bool = False,
    client_stream: bool = False,
    name: str | None = None,
) -> Any:
    """Mark a method of a ``GrpcService`` as a gRPC method.

    ``@grpc_method`` is unary; ``stream=True`` streams the response (an async generator),
    ``client_stream=True`` takes the requests as an async iterator, both is bidirectional.
    ``name`` is the method's name on the wire (default: the function's name, or its
    CamelCase form when the ``.proto`` names it so). With a ``.proto`` the kinds come from it.
    """

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f._grpc = {"stream": bool(stream), "client_stream": bool(client_stream), "name": name}  # type: ignore[attr-defined]
        return f

    return mark(func) if func is not None else mark


class GrpcService:
    """Subclass it and decorate handlers with ``@grpc_method``. ``name`` is the full service
    name (``package.Service``); by default the ``.proto``'s service of the class's name, or
    the class's name."""

    name: ClassVar[str | None] = None


class GrpcRequest:
    """The context of a call, given to handlers that take a second parameter.

    ``metadata`` (first value per key, lower-case keys; ``-bin`` values are bytes),
    ``metadata_list`` (every pair), ``method`` (``/package.Service/Method``), ``service``,
    ``time_remaining()`` (seconds, ``None`` without a deadline), ``set_header(key, value)``
    (initial metadata, before the first response message), ``set_trailer(key, value)``,
    ``abort(code, message)``.
    """

    def __init__(self, call: Any, method: str, service: str) -> None:
        self._call = call
        self.method = method
        self.service = service
        self.metadata_list: list[tuple[str, Any]] = list(call.metadata)
        self.metadata: dict[str, Any] = {}
        for k, v in self.metadata_list:
            self.metadata.setdefault(k, v)
        timeout = call.timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._trailers: list[tuple[str, Any]] = []
        self.message: Any = None

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_header(self, key: str, value: Any) -> None:
        self._call.set_headers([(key.lower(), value)])

    def set_trailer(self, key: str, value: Any) -> None:
        self._trailers.append((key.lower(), value))

    def abort(self, code: Any, message: str = "") -> None:
        raise GrpcError(code, message)


class GrpcResponse:
    """A unary handler's answer with metadata: ``GrpcResponse(message, headers=..., trailers=...)``."""

    def __init__(self, message: Any, headers: Any = None, trailers: Any = None) -> None:
        self.message = message
        self.headers = _pairs(headers)
        self.trailers = _pairs(trailers)


def to_dict(value: Any) -> Any:
    """A handler's message: a dict, a dataclass, a pydantic model or an object with ``to_dict``."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"a gRPC message must be a dict (or a dataclass/pydantic model), not {type(value).__name__}")


class JsonCodec:
    """The dict style without a ``.proto``: messages are JSON documents."""

    name = "json"

    def decode(self, data: bytes) -> Any:
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError as e:
            raise GrpcError(StatusCode.INVALID_ARGUMENT, f"the message is not JSON: {e}") from None

    def encode(self, value: Any) -> bytes:
        return json.dumps(to_dict(value) if not isinstance(value, (list, str, int, float, bool)) else value).encode()


@dataclasses.dataclass
class Method:
    service: str
    name: str
    kind: str
    handler: Callable[..., Any]
    request: Any  # .decode(bytes) -> value
    response: Any  # .encode(value) -> bytes
    with_context: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _takes_context(func: Callable[..., Any]) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


def _declared(service: Any) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    out = {}
    for attr in dir(type(service)):
        if attr.startswith("__"):
            continue
        f = getattr(type(service), attr, None)
        spec = getattr(f, "_grpc", None)
        if spec is not None:
            out[attr] = (getattr(service, attr), spec)
    return out


_SCHEMAS: dict[Path, Any] = {}


def load_proto(proto: Any) -> Any:
    """A compiled ``.proto`` (compiled once per path)."""
    from .. import _cello

    path = Path(proto).resolve()
    if path not in _SCHEMAS:
        if not path.is_file():
            raise FileNotFoundError(f"no .proto file at {path}")
        _SCHEMAS[path] = _cello.ProtoSchema(str(path))
    return _SCHEMAS[path]


def methods_of(service: Any, proto: Any = None) -> tuple[str, list[Method], Any]:
    """The methods of a ``GrpcService`` instance, checked against its ``.proto``."""
    if isinstance(service, type):
        raise TypeError(f"add_service() takes a {service.__name__} instance, not the class")
    if not isinstance(service, GrpcService):
        raise TypeError(f"a gRPC service is a GrpcService instance, not {type(service).__name__}")
    declared = _declared(service)
    if proto is None:
        name = service.name or type(service).__name__
        codec = JsonCodec()
        methods = []
        for attr, (func, spec) in declared.items():
            stream = spec["stream"] or inspect.isasyncgenfunction(func)
            methods.append(
                Method(
                    name,
                    spec["name"] or attr,
                    _kind(spec["client_stream"], stream),
                    func,
                    codec,
                    codec,
                    _takes_context(func),
                )
            )
        if not methods:
            raise ValueError(f"{type(service).__name__} has no @grpc_method")
        return name, methods, None
    schema = load_proto(proto)
    services = dict(schema.services())
    name = service.name
    if name is None:
        short = type(service).__name__
        matches = [s for s in services if s.rsplit(".", 1)[-1] == short]
        if len(matches) == 1:
            name = matches[0]
        elif len(services) == 1:
            name = next(iter(services))
        else:
            raise ValueError(f"{proto}: set {short}.name to one of {sorted(services)}")
    if name not in services:
        raise ValueError(f"{proto} has no service {name!r} (it has {sorted(services)})")
    by_wire = {spec["name"] or attr: (func, spec) for attr, (func, spec) in declared.items()}
    methods = []
    for mname, inp, out, client, server in services[name]:
        found = by_wire.get(mname) or by_wire.get(_snake(mname))
        if found is None:
            # An rpc without a handler answers UNIMPLEMENTED, as in every gRPC server.
            continue
        func, spec = found
        kind = _kind(client, server)
        said = _kind(spec["client_stream"], spec["stream"])
        if (spec["stream"] or spec["client_stream"]) and said != kind:
            raise ValueError(f"{name}.{mname} is {kind} in {proto}, but its @grpc_method says {said}")
        methods.append(Method(name, mname, kind, func, schema.message(inp), schema.message(out), _takes_context(func)))
    if not methods:
        raise ValueError(f"{type(service).__name__} implements no rpc of {name} in {proto}")
    return name, methods, schema


def methods_of_mapping(name: str, handlers: Any) -> list[Method]:
    """The published form: ``add_grpc_service("pkg.Service", {"Method": handler})`` (JSON)."""
    if not isinstance(name, str) or not name:
        raise TypeError("add_grpc_service(name, methods): name is the service's full name")
    if not hasattr(handlers, "items"):
        raise TypeError("add_grpc_service(name, methods): methods maps method names to handlers")
    codec = JsonCodec()
    out = []
    for mname, func in handlers.items():
        if not callable(func):
            raise TypeError(f"the handler of {name}.{mname} is not callable")
        spec = getattr(func, "_grpc", {"stream": False, "client_stream": False})
        stream = spec["stream"] or inspect.isasyncgenfunction(func)
        out.append(Method(name, mname, _kind(spec["client_stream"], stream), func, codec, codec, _takes_context(func)))
    return out


async def requests_of(call: Any, method: Method) -> AsyncIterator[Any]:
    while True:
        raw = await call.recv()
        if raw is None:
            return
        yield _decode(method, raw)


def _decode(method: Method, raw: bytes) -> Any:
    try:
        return method.request.decode(raw)
    except GrpcError:
        raise
    except (ValueError, TypeError) as e:
        raise GrpcError(StatusCode.INVALID_ARGUMENT, str(e)) from None
