"""Errors of the webhook service, and the request errors every route set shares.

Each error knows its HTTP status and API code (API.md "Errors"); one handler in the mounting app
renders ``{"error": {code, message, details}}``.

HTTPError                       the shape every API error has (also the orchestrator's root)
├── InvalidJSON                 400 invalid_json        (shared by both route sets)
├── PayloadTooLarge             413 payload_too_large   (shared)
├── ValidationFailed            422 validation_error    (shared; details.fields lists each bad field)
└── WebhookError                500 internal
    ├── EndpointNotFound        404 not_found
    ├── DeliveryNotFound        404 not_found
    └── NotReplicated           503 unavailable     (a write not confirmed by enough replicas in time)
WebhookVerificationError        (receivers: a delivery that does not verify; see signing.py)
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class HTTPError(Exception):
    """An error that knows its HTTP status, API code, message and details; one handler renders it."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidJSON(HTTPError):
    """The body is not a JSON document (or not UTF-8)."""

    status_code = 400
    code = "invalid_json"


class PayloadTooLarge(HTTPError):
    """The body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[dict[str, Any]]:
    """One ``{field, message, type}`` per bad field of a pydantic error, with dotted paths.

    `prefix` names where the validated value sits (``input`` gives ``input.vendor.name``).
    """
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        parts = [prefix] if prefix else []
        parts += [str(p) for p in err["loc"]]
        out.append({"field": ".".join(parts) or "body", "message": err["msg"], "type": err["type"]})
    return out


class ValidationFailed(HTTPError):
    """Well-formed input that breaks the schema; ``details.fields`` lists each bad field."""

    status_code = 422
    code = "validation_error"

    @classmethod
    def field(cls, name: str, message: str, kind: str = "value_error") -> ValidationFailed:
        """A 422 naming one bad field (or query parameter, or header): ``"{name}: {message}"``."""
        return cls(
            f"{name}: {message}", details={"fields": [{"field": name, "message": message, "type": kind}]}
        )

    @classmethod
    def of(cls, message: str, exc: ValidationError, *, prefix: str = "") -> ValidationFailed:
        """A 422 listing every bad field of a pydantic error under `prefix`."""
        return cls(message, details={"fields": field_errors(exc, prefix=prefix)})


class WebhookError(HTTPError):
    """Root of the webhook service's own errors."""


class EndpointNotFound(WebhookError):
    """No such endpoint for this tenant."""

    status_code = 404
    code = "not_found"


class DeliveryNotFound(WebhookError):
    """No such message for this endpoint."""

    status_code = 404
    code = "not_found"


class NotReplicated(WebhookError):
    """A write was not confirmed by the required replicas in time (it may still exist); retry."""

    status_code = 503
    code = "unavailable"
