"""Errors of the webhook service; each knows its HTTP status and API code.

HTTPError                       the shape every API error has (also the orchestrator's root)
└── WebhookError                500 internal
    ├── EndpointNotFound        404 not_found
    ├── DeliveryNotFound        404 not_found
    └── InvalidEndpoint         422 validation_error   (details list each bad field)
WebhookVerificationError        (receivers: a delivery that does not verify; see signing.py)
"""

from __future__ import annotations

from typing import Any


class HTTPError(Exception):
    """An error that knows its HTTP status, API code, message and details; one handler renders it."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class WebhookError(HTTPError):
    """Root of the webhook service's errors."""


class EndpointNotFound(WebhookError):
    """No such endpoint for this tenant."""

    status_code = 404
    code = "not_found"


class DeliveryNotFound(WebhookError):
    """No such message for this endpoint."""

    status_code = 404
    code = "not_found"


class InvalidEndpoint(WebhookError):
    """An endpoint field is invalid (URL, events, flow ids)."""

    status_code = 422
    code = "validation_error"

    @classmethod
    def field(cls, name: str, message: str, kind: str = "value_error") -> InvalidEndpoint:
        """An error naming one field."""
        return cls(
            f"{name}: {message}", details={"fields": [{"field": name, "message": message, "type": kind}]}
        )
