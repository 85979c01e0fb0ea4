"""Webhook delivery, Standard Webhooks style: endpoints, signing, a dispatcher with retries.

Receivers need only ``verify``::

    from webhooks import verify, WebhookVerificationError
    event = verify(body, headers, secret, tolerance=300)   # -> Event(id, type, timestamp, data)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .signing import Event, WebhookVerificationError, generate_secret, sign, verify

if TYPE_CHECKING:
    from .dispatcher import Dispatcher

__all__ = ["Dispatcher", "Event", "WebhookVerificationError", "generate_secret", "sign", "verify"]


def __getattr__(name: str) -> Any:
    # The dispatcher pulls in aiohttp and redis; a receiver importing `verify` should not pay for that.
    if name == "Dispatcher":
        from .dispatcher import Dispatcher

        return Dispatcher
    raise AttributeError(name)
