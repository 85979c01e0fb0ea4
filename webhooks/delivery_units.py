"""The units of delivery: a message (what goes on the wire), one delivery of it to one endpoint, and
what recording an attempt did; plus the ``webhook.test`` message. No I/O here."""

from __future__ import annotations

import json
from dataclasses import dataclass

from webhooks.compression import packed
from webhooks.ids import new_id
from webhooks.models import DeliveryStatus, Endpoint, format_timestamp, from_ms

S = DeliveryStatus


@dataclass
class Message:
    """What goes on the wire, and who it is about."""

    id: str
    type: str
    tenant: str
    subject: str
    body: str | bytes  # text, or packed (``webhooks.compression.text`` gives the wire text)
    created_ms: int

    def record(self) -> bytes:
        """The stored form (one string, see :func:`message_of`): a JSON header line, then the body."""
        head = json.dumps([self.type, self.tenant, self.subject, self.created_ms], separators=(",", ":"))
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return head.encode() + b"\n" + body


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt did: whether it was written, the endpoint's failure streak (its
    start and Redis's now, ms) and whether a success found the endpoint disabled for failing."""

    done: bool
    failing_since: int | None = None
    now_ms: int = 0
    heal: bool = False


@dataclass
class Delivery:
    """One message for one endpoint, as the dispatcher needs it to send."""

    id: str
    message_id: str
    endpoint_id: str
    status: DeliveryStatus
    attempts: int
    base: int
    tenant: str
    url: str
    # Read together with the row when the delivery is taken (saves a round trip per attempt).
    message: Message | None = None
    # The due-queue score our take set: while it is still there, the claim is ours.
    claimed_until: int | None = None
    # Redis's time at the take (ms), and this process's monotonic clock then (s).
    taken_ms: int = 0
    taken_mono: float = 0.0
    # An alert (failing, exhausted) went out about it: a success then raises `recovered`.
    alerted: bool = False
    # The subject of its ordered lane ("" for none) and its sequence there (webhooks.lanes).
    lane: str = ""
    seq: int = 0

    @property
    def attempt_number(self) -> int:
        """1-based number of the next attempt within the current retry round."""
        return self.attempts - self.base + 1


TEST_EVENT = "webhook.test"


def message_of(message_id: str, raw: bytes | dict[bytes, bytes] | None) -> Message | None:
    """The message stored under `message_id` (:meth:`Message.record`'s string, or the hash of
    fields stored before it, as HGETALL returns it), or None if it expired."""
    if not raw:
        return None
    if isinstance(raw, dict):  # stored before the one-string form (issue 15)
        d = {k.decode(): v for k, v in raw.items()}
        body: str | bytes = d["body"] if packed(d["body"]) else d["body"].decode()
        created = int(d["created"])
        return Message(
            message_id, d["type"].decode(), d["tenant"].decode(), d["subject"].decode(), body, created
        )
    head, _, stored = raw.partition(b"\n")
    event_type, tenant, subject, created_ms = json.loads(head)
    return Message(
        message_id, event_type, tenant, subject, stored if packed(stored) else stored.decode(), created_ms
    )


def test_message(endpoint: Endpoint, *, now_ms: int, note: str) -> Message:
    """A ``webhook.test`` message for one endpoint."""
    body = json.dumps(
        {
            "type": TEST_EVENT,
            "timestamp": format_timestamp(from_ms(now_ms)),
            "data": {"endpointId": endpoint.id, "message": note},
        },
        separators=(",", ":"),
    )
    return Message(new_id("msg", now_ms=now_ms), TEST_EVENT, endpoint.tenant, endpoint.id, body, now_ms)
