"""Operational events: what happens to an endpoint and its deliveries, told to the sending side.

Like Svix's operational webhooks and Outpost's alerts, five types describe the delivery service
itself rather than the producer's subjects (each body ``{type, timestamp, data}``):

- ``endpoint.disabled``: disabled automatically (``reason`` ``failing`` or ``gone``) or by hand (``manual``);
- ``endpoint.enabled``: healed by a probe or a late success (``healed``), or enabled by hand (``manual``);
- ``message.attempt.failing``: a message's ``failing_after``-th consecutive attempt failed (default 4);
- ``message.attempt.exhausted``: its last scheduled attempt failed: the message is ``failed``;
- ``message.attempt.recovered``: it was delivered after a failing or exhausted event about it.

Each is appended, in the same Redis script as the state change it reports, to the outbox (so the
fan-out sends it, signed like any message, to the tenant's endpoints that subscribe to its type,
never to the endpoint it is about: its ``subject`` is that endpoint's id) and to that endpoint's
event log (``GET /v1/webhooks/{id}/events``, newest first, the last ``EVENT_LOG_MAX`` kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from webhooks import keys
from webhooks.ids import new_id
from webhooks.models import Attempt, format_timestamp, from_ms
from webhooks.outbox import OutboxEntry

ENDPOINT_DISABLED = "endpoint.disabled"
ENDPOINT_ENABLED = "endpoint.enabled"
MESSAGE_FAILING = "message.attempt.failing"
MESSAGE_EXHAUSTED = "message.attempt.exhausted"
MESSAGE_RECOVERED = "message.attempt.recovered"
OPERATIONAL_EVENTS = (
    ENDPOINT_DISABLED,
    ENDPOINT_ENABLED,
    MESSAGE_FAILING,
    MESSAGE_EXHAUSTED,
    MESSAGE_RECOVERED,
)
EVENT_LOG_MAX = 1000

# Lua: append one alert to the outbox and to an endpoint's event log (trimmed to its newest
# `log_max`). The alert's arguments are in `args` (the caller's ARGV, which in a batched script is
# one call's slice) from index i: log member, n, then n outbox field/value items (:func:`alert_args`).
# Returns the index after it.
EMIT = """
local function emit(args, outbox, log, log_max, i)
  local member, n = args[i], tonumber(args[i + 1])
  local fields = {}
  for j = 1, n do fields[j] = args[i + 1 + j] end
  redis.call('XADD', outbox, '*', unpack(fields))
  redis.call('ZADD', log, 0, member)
  local size = redis.call('ZCARD', log)
  if size > tonumber(log_max) then redis.call('ZREMRANGEBYRANK', log, 0, size - tonumber(log_max) - 1) end
  return i + 2 + n
end
"""

# Append one alert about an endpoint that still exists. KEYS: 1 endpoint, 2 outbox, 3 its event log.
# ARGV: 1 log max, then the alert. Returns 1 if appended.
EMIT_ONE = (
    EMIT
    + """
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return 0 end
emit(ARGV, KEYS[2], KEYS[3], ARGV[1], 2)
return 1
"""
)


@dataclass(frozen=True)
class Alert:
    """One operational event about one endpoint, ready to append."""

    id: str
    type: str
    tenant: str
    endpoint_id: str
    body: str  # the wire body {type, timestamp, data}
    entry: str  # the event log's JSON {id, type, timestamp, data}

    def args(self) -> list[str | bytes]:
        """The alert's ARGV for EMIT: log member ("{id} {entry}": newest-first by id), n, fields."""
        fields = OutboxEntry(
            id=self.id, type=self.type, tenant=self.tenant, subject=self.endpoint_id, flow="", body=self.body
        ).to_fields()
        return [f"{self.id} {self.entry}", str(len(fields)), *fields]


def alert(event_type: str, *, tenant: str, endpoint_id: str, data: dict[str, Any], at_ms: int) -> Alert:
    """An alert of `event_type` about `endpoint_id`, labelled `at_ms` (Redis's time as measured here)."""
    message_id = new_id("msg", now_ms=at_ms)
    stamp = format_timestamp(from_ms(at_ms))
    body = json.dumps({"type": event_type, "timestamp": stamp, "data": data}, separators=(",", ":"))
    entry = json.dumps(
        {"id": message_id, "type": event_type, "timestamp": stamp, "data": data}, separators=(",", ":")
    )
    return Alert(message_id, event_type, tenant, endpoint_id, body, entry)


def stamp(ms: int | None) -> str | None:
    """RFC 3339 of unix ms, or None."""
    return None if ms is None else format_timestamp(from_ms(ms))


def endpoint_data(
    endpoint_id: str, *, reason: str, at_ms: int, failing_since: int | None = None
) -> dict[str, Any]:
    """``data`` of ``endpoint.disabled`` / ``endpoint.enabled``."""
    return {
        "endpointId": endpoint_id,
        "reason": reason,
        "at": stamp(at_ms),
        "failingSince": stamp(failing_since),
    }


def message_data(
    *,
    endpoint_id: str,
    message_id: str,
    event_type: str,
    subject: str,
    attempts: int,
    last: Attempt,
) -> dict[str, Any]:
    """``data`` of the ``message.attempt.*`` events: which message, to which endpoint, the last attempt."""
    return {
        "endpointId": endpoint_id,
        "messageId": message_id,
        "eventType": event_type,
        "runId": subject or None,
        "attempts": attempts,
        "lastAttempt": last.model_dump(mode="json", by_alias=True, exclude={"response_body"}),
    }


async def event_page(
    redis: Redis, endpoint_id: str, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A newest-first page of the endpoint's event log, and the cursor of the next one."""
    upper = "+" if cursor is None else f"({cursor}"
    raw = await redis.zrevrangebylex(keys.endpoint_events(endpoint_id), upper, "-", 0, limit + 1)
    items = [json.loads(m.decode().split(" ", 1)[1]) for m in raw[:limit]]
    return items, (items[-1]["id"] if len(raw) > limit and items else None)
