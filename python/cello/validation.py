"""``cello.validation``: request and response validation.

Typed handler parameters are validated when a request arrives: the markers below say where a
value comes from and which constraints apply; failures are one 422 problem+json listing every
field error (``RequestValidationError``). Response models are validated on the way out
(``ResponseValidationError``, a 500).
"""

from .params import Body, Cookie, File, Form, Header, Param, Path, Query, RequestValidationError
from .response_model import ResponseValidationError

__all__ = [
    "Body",
    "Cookie",
    "File",
    "Form",
    "Header",
    "Param",
    "Path",
    "Query",
    "RequestValidationError",
    "ResponseValidationError",
]
