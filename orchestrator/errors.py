"""Server-side error tree; each error knows its HTTP status and API.md code.

    HTTPError (webhooks.errors)        the shape of every API error
    ├── InvalidJSON                    400 invalid_json        } request errors shared with the
    ├── PayloadTooLarge                413 payload_too_large   } webhook routes, defined in
    ├── ValidationFailed               422 validation_error    } webhooks.errors
    └── OrchestratorError              500 internal
        ├── Unauthorized               401 unauthorized
        ├── CSRFFailed                 403 csrf_failed (a dashboard POST without its session's token)
        ├── NotFound                   404 not_found
        │   ├── RunNotFound
        │   └── FlowNotFound
        ├── Conflict                   409 conflict
        │   └── InvalidTransition      (also raised inside workers)
        ├── RateLimited                429 rate_limited
        ├── HeadersTooLarge            431 headers_too_large
        └── Unavailable                503 unavailable
    StaleAttempt                       (worker-internal: a newer attempt owns the run)

``FlowError`` is what a flow raises to fail its execution with a code of its own.
"""

from __future__ import annotations

from typing import Any

from webhooks.errors import HTTPError, InvalidJSON, PayloadTooLarge, ValidationFailed

__all__ = [
    "CSRFFailed",
    "Conflict",
    "FlowError",
    "FlowNotFound",
    "HTTPError",
    "HeadersTooLarge",
    "InvalidJSON",
    "InvalidTransition",
    "NotFound",
    "OrchestratorError",
    "PayloadTooLarge",
    "RateLimited",
    "RunNotFound",
    "StaleAttempt",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]


class OrchestratorError(HTTPError):
    """Root of the server's errors; rendered by the one handler in ``app.py``."""


class Unauthorized(OrchestratorError):
    """No API key, or one we do not know."""

    status_code = 401
    code = "unauthorized"


class CSRFFailed(OrchestratorError):
    """A dashboard action by a signed-in browser without its session's CSRF token, or from another site."""

    status_code = 403
    code = "csrf_failed"


class NotFound(OrchestratorError):
    """The resource does not exist for this tenant."""

    status_code = 404
    code = "not_found"


class RunNotFound(NotFound):
    """No execution with this id for this tenant."""


class FlowNotFound(NotFound):
    """No flow registered under this id."""


class Conflict(OrchestratorError):
    """The request clashes with the resource's current state."""

    status_code = 409
    code = "conflict"


class InvalidTransition(Conflict):
    """The state machine refuses this move (for example: the run is already terminal)."""

    def __init__(self, run_id: str, current: str, target: str) -> None:
        super().__init__(
            f"execution {run_id} is {current} and cannot become {target}",
            details={"id": run_id, "status": current, "requested": target},
        )
        self.run_id = run_id
        self.current = current
        self.target = target


class RateLimited(OrchestratorError):
    """Too many requests."""

    status_code = 429
    code = "rate_limited"


class HeadersTooLarge(OrchestratorError):
    """The request headers are too many or too large (RFC 6585); refused before any route runs."""

    status_code = 431
    code = "headers_too_large"


class Unavailable(OrchestratorError):
    """A dependency (Redis) cannot be reached; retry later."""

    status_code = 503
    code = "unavailable"


class StaleAttempt(Exception):
    """A worker holds an attempt that is no longer the run's current one: it must stop writing."""


class FlowError(Exception):
    """Raised by a flow to end its execution ``failed`` with this code, message and details."""

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
