"""SDK errors, one class per HTTP status, so callers can catch exactly what they handle.

APIError
├── APIConnectionError             no answer (refused, reset, DNS)
│   └── APITimeoutError            no answer in time
└── APIStatusError                 an error answer; .status_code .code .message .details
    ├── BadRequestError            400 (invalid_json)
    ├── AuthenticationError        401
    ├── NotFoundError              404
    ├── ConflictError              409 (conflict, idempotency_conflict)
    ├── PayloadTooLargeError       413
    ├── ValidationError            422 (details.fields lists each bad field)
    ├── RateLimitError             429
    └── InternalServerError        5xx (ServiceUnavailableError for 503)
TimeoutError (builtins.TimeoutError)   wait_for_completion gave up; the execution goes on
"""

from __future__ import annotations

import builtins
from typing import Any


class APIError(Exception):
    """Root of every SDK error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIConnectionError(APIError):
    """The server could not be reached or the connection broke."""


class APITimeoutError(APIConnectionError):
    """The server did not answer within the client's timeout."""


class APIStatusError(APIError):
    """The server answered with an error status; carries the API error body."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.details = details or {}
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"


class BadRequestError(APIStatusError):
    """400: the request could not be read."""


class AuthenticationError(APIStatusError):
    """401: no API key, or an unknown one."""


class NotFoundError(APIStatusError):
    """404: no such resource for this API key."""


class ConflictError(APIStatusError):
    """409: the resource's state forbids this (e.g. cancelling a finished run)."""


class PayloadTooLargeError(APIStatusError):
    """413: the body is over the server's limit."""


class ValidationError(APIStatusError):
    """422: the request is well-formed but invalid; ``details["fields"]`` lists each bad field."""


class RateLimitError(APIStatusError):
    """429: slow down."""


class InternalServerError(APIStatusError):
    """5xx: the server failed."""


class ServiceUnavailableError(InternalServerError):
    """503: a dependency of the server is down; retry later."""


class TimeoutError(builtins.TimeoutError):
    """``wait_for_completion`` gave up waiting; the execution itself goes on."""

    def __init__(self, execution_id: str, timeout: float, last: Any = None) -> None:
        super().__init__(f"execution {execution_id} not finished after {timeout:g} s")
        self.execution_id = execution_id
        self.timeout = timeout
        self.last = last


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_class(status: int) -> type[APIStatusError]:
    """The one place that maps an HTTP status to an error class."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InternalServerError if status >= 500 else APIStatusError
