"""Webhook delivery, Standard Webhooks style: endpoints, signing, a dispatcher with retries.

Receivers need only ``verify``::

    from webhooks import verify, WebhookVerificationError
    event = verify(body, headers, secret, tolerance=300)   # -> Event(id, type, timestamp, data)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webhooks.signing import Event, WebhookVerificationError, generate_secret, sign, verify

if TYPE_CHECKING:
    from webhooks.dispatcher import Dispatcher
    from webhooks.receiver import MemoryStore, Received, Receiver, RedisStore

__all__ = [
    "Dispatcher",
    "Event",
    "MemoryStore",
    "Received",
    "Receiver",
    "RedisStore",
    "WebhookVerificationError",
    "generate_secret",
    "sign",
    "verify",
]
_LAZY = {
    "Dispatcher": "dispatcher",
    "Receiver": "receiver",
    "Received": "receiver",
    "MemoryStore": "receiver",
    "RedisStore": "receiver",
}


def __getattr__(name: str) -> Any:
    # The dispatcher and the receiver's Redis store pull in aiohttp and redis; a receiver that
    # only imports `verify` should not pay for that.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
