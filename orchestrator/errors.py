"""Server-side error tree; each error knows its HTTP status and API.md code.

    OrchestratorError                  500 internal
    ├── InvalidJSON                    400 invalid_json
    ├── Unauthorized                   401 unauthorized
    ├── NotFound                       404 not_found
    │   ├── RunNotFound
    │   └── FlowNotFound
    ├── Conflict                       409 conflict
    │   └── InvalidTransition          (also raised inside workers)
    ├── PayloadTooLarge                413 payload_too_large
    ├── ValidationFailed               422 validation_error
    ├── RateLimited                    429 rate_limited
    ├── HeadersTooLarge                431 headers_too_large
    └── Unavailable                    503 unavailable
    StaleAttempt                       (worker-internal: a newer attempt owns the run)

``FlowError`` is what a flow raises to fail its execution with a code of its own.
"""

from __future__ import annotations

from typing import Any

from webhooks.errors import HTTPError


class OrchestratorError(HTTPError):
    """Root of the server's errors; rendered by the one handler in ``app.py``."""


class InvalidJSON(OrchestratorError):
    """The body is not a JSON document (or not UTF-8)."""

    status_code = 400
    code = "invalid_json"


class Unauthorized(OrchestratorError):
    """No API key, or one we do not know."""

    status_code = 401
    code = "unauthorized"


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


class PayloadTooLarge(OrchestratorError):
    """The body is larger than ``ORCH_MAX_BODY_BYTES``."""

    status_code = 413
    code = "payload_too_large"


class ValidationFailed(OrchestratorError):
    """The body or query is well-formed JSON but breaks the schema; details list each bad field."""

    status_code = 422
    code = "validation_error"


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
