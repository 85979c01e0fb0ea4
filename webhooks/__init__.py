"""Webhook delivery, Standard Webhooks style: endpoints, signing, a dispatcher with retries.

Receivers need only ``verify``::

    from webhooks import verify, WebhookVerificationError
    event = verify(body, headers, secret, tolerance=300)   # -> Event(id, type, timestamp, data)

A producer appends :class:`OutboxEntry` values to the outbox stream inside its own atomic writes
(``webhooks.outbox``); a :class:`Dispatcher` fans them out, signs, sends and retries. This package
never imports the orchestrator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webhooks.outbox import OUTBOX_STREAM, Hook, OutboxEntry
from webhooks.signing import Event, WebhookVerificationError, generate_secret, headers_for, sign, verify

if TYPE_CHECKING:
    from webhooks.clock import RedisClock
    from webhooks.dispatcher import Dispatcher
    from webhooks.endpoints import EndpointStore
    from webhooks.receiver import MemoryStore, Received, Receiver, RedisStore

__all__ = [
    "OUTBOX_STREAM",
    "Dispatcher",
    "EndpointStore",
    "Event",
    "Hook",
    "MemoryStore",
    "OutboxEntry",
    "Received",
    "Receiver",
    "RedisClock",
    "RedisStore",
    "WebhookVerificationError",
    "generate_secret",
    "headers_for",
    "sign",
    "verify",
]
_LAZY = {
    "RedisClock": "clock",
    "Dispatcher": "dispatcher",
    "EndpointStore": "endpoints",
    "Receiver": "receiver",
    "Received": "receiver",
    "MemoryStore": "receiver",
    "RedisStore": "receiver",
}


def __getattr__(name: str) -> Any:
    # The dispatcher, the stores and the receiver's Redis store pull in aiohttp and redis; a
    # receiver that only imports `verify` should not pay for that.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"webhooks.{_LAZY[name]}"), name)
    raise AttributeError(name)
