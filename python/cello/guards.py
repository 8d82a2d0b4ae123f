"""Guards: checks that run before a handler and answer 401/403 when they fail."""

from __future__ import annotations

from .errors import HTTPException


class GuardError(HTTPException):
    def __init__(self, message: str = "access denied", status_code: int = 403) -> None:
        super().__init__(status_code, message)
        self.message = message


class ForbiddenError(GuardError):
    def __init__(self, message: str = "forbidden") -> None:
        super().__init__(message, 403)


class UnauthorizedError(GuardError):
    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message, 401)
