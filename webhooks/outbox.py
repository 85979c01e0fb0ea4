"""The outbox stream: the one seam between a producer of events and the webhook dispatcher.

A producer appends one entry per message inside its own atomic write (the orchestrator's
transition script XADDs ``OutboxEntry.to_fields()``); the dispatcher reads the stream through a
consumer group and turns each entry back into an :class:`OutboxEntry` with :meth:`OutboxEntry.parse`.
Nothing else knows the field names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from webhooks.compression import packed

OUTBOX_STREAM = "wh:outbox"


class MalformedEntry(ValueError):
    """An outbox entry that lacks a required field or carries an unreadable one."""


@dataclass(frozen=True, slots=True)
class Hook:
    """A one-subject webhook carried by an entry (a run's own ``webhook: {url, events}``)."""

    url: str
    events: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The form stored with the subject and carried in the entry."""
        return json.dumps(
            {"url": self.url, "events": list(self.events)} if self.events else {"url": self.url}
        )

    @classmethod
    def from_json(cls, text: str) -> Hook:
        """Parse :meth:`to_json`'s form; MalformedEntry if it is not one."""
        try:
            doc = json.loads(text)
            return cls(url=str(doc["url"]), events=tuple(str(e) for e in doc.get("events") or ()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedEntry(f"hook is not a webhook object: {exc}") from None


def _body(value: object, entry_id: bytes | str) -> str | bytes:
    """An entry's body: packed bytes stay packed, anything else is text."""
    if value is None:
        raise MalformedEntry(f"outbox entry {entry_id!r} has no 'body'")
    if isinstance(value, bytes):
        return value if packed(value) else value.decode()
    return str(value)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message to fan out.

    Fields: ``id`` (``msg_…``, the ``webhook-id`` of every attempt), ``type`` (event type),
    ``tenant`` (only this tenant's endpoints may receive it), ``subject`` (what it is about; for
    executions the run id), ``flow`` (the value endpoints filter on with ``flowIds``; may be empty),
    ``body`` (the exact JSON sent on the wire, as text, or packed by ``webhooks.compression``: kept
    packed until an attempt sends it), ``hook`` (a one-subject webhook, or None),
    ``sequence`` (the message's place among its subject's, 1, 2, 3... with no gap, in commit order;
    0 for none: what ordered endpoints order by, ``webhooks.lanes``), and ``created_ms`` (when it
    was appended: the stream entry's time, not a field).
    """

    id: str
    type: str
    tenant: str
    subject: str
    flow: str
    body: str | bytes
    hook: Hook | None = None
    sequence: int = 0
    created_ms: int = 0

    def to_fields(self) -> list[str | bytes]:
        """Field/value pairs in XADD order (the producer's side; `created_ms` is the stream's)."""
        fields: list[str | bytes] = [
            "id",
            self.id,
            "type",
            self.type,
            "tenant",
            self.tenant,
            "subject",
            self.subject,
            "flow",
            self.flow,
            "body",
            self.body,
        ]
        if self.hook is not None:
            fields += ["hook", self.hook.to_json()]
        if self.sequence:
            fields += ["seq", str(self.sequence)]
        return fields

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: dict[bytes, bytes] | dict[str, Any]) -> OutboxEntry:
        """Read one stream entry as XREADGROUP returns it; MalformedEntry if a field is missing."""
        text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

        def get(name: str, *, required: bool = True) -> str:
            value = text.get(name)
            if value is None:
                if required:
                    raise MalformedEntry(f"outbox entry {entry_id!r} has no {name!r}")
                return ""
            return value.decode() if isinstance(value, bytes) else str(value)

        raw_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        hook = get("hook", required=False)
        seq = get("seq", required=False)
        if seq and not (seq.isascii() and seq.isdigit()):
            raise MalformedEntry(f"outbox entry {entry_id!r} has a sequence that is not a number")
        return cls(
            id=get("id"),
            type=get("type"),
            tenant=get("tenant"),
            subject=get("subject"),
            flow=get("flow", required=False),
            body=_body(text.get("body"), entry_id),
            hook=Hook.from_json(hook) if hook else None,
            sequence=int(seq) if seq else 0,
            created_ms=int(raw_id.split("-")[0]),
        )
