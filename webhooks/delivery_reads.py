"""Reads of the delivery state: rows by (message, endpoint), an endpoint's newest-first pages, and the
upkeep of the listings those pages read. :class:`DeliveryStore` (``webhooks.deliveries``) adds the writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from webhooks import keys
from webhooks.delivery_units import message_of
from webhooks.ids import id_floor
from webhooks.models import Attempt, DeliveryOut, DeliveryStatus, format_timestamp, from_ms

S = DeliveryStatus


@dataclass
class DeliveryState:
    """Where one delivery stands: status, next attempt (RFC 3339) while pending, every attempt."""

    status: str
    next_attempt_at: str | None
    attempts: list[Attempt]


class DeliveryReads:
    """The read side of the delivery store (``self.redis`` is the client)."""

    redis: Redis

    async def rows(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DeliveryState]:
        """State of the deliveries of (message id, endpoint id) pairs that exist."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for msg_id, ep_id in pairs:
                dlv = keys.delivery_id(msg_id, ep_id)
                pipe.hgetall(keys.delivery(dlv))
                pipe.lrange(keys.delivery_log(dlv), 0, -1)
            rows = await pipe.execute()
        out: dict[tuple[str, str], DeliveryState] = {}
        for i, pair in enumerate(pairs):
            raw, log = rows[2 * i], rows[2 * i + 1]
            if not raw:
                continue
            d = {k.decode(): v.decode() for k, v in raw.items()}
            nxt = d.get("next", "")
            out[pair] = DeliveryState(
                status=d["status"],
                next_attempt_at=format_timestamp(from_ms(int(nxt)))
                if nxt and d["status"] == "pending"
                else None,
                attempts=[Attempt.model_validate_json(a) for a in log],
            )
        return out

    async def page(
        self, endpoint_id: str, *, status: DeliveryStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[DeliveryOut], str | None]:
        """A newest-first page of the endpoint's deliveries, each with its attempts."""
        index = keys.listing(endpoint_id, status)
        upper = "+" if cursor is None else f"({cursor}"
        ids = [i.decode() for i in await self.redis.zrevrangebylex(index, upper, "-", 0, limit + 1)]
        more = len(ids) > limit
        ids = ids[:limit]
        async with self.redis.pipeline(transaction=False) as pipe:
            for msg_id in ids:
                dlv = keys.delivery_id(msg_id, endpoint_id)
                pipe.hgetall(keys.delivery(dlv))
                pipe.lrange(keys.delivery_log(dlv), 0, -1)
                pipe.get(keys.message(msg_id))
            rows = await pipe.execute(raise_on_error=False)
        out: list[DeliveryOut] = []
        gone: list[str] = []
        for i, msg_id in enumerate(ids):
            raw, log = rows[3 * i], rows[3 * i + 1]
            etype, subject = await self._message_head(msg_id, rows[3 * i + 2])
            if not raw:
                gone.append(msg_id)
                continue
            d = {k.decode(): v.decode() for k, v in raw.items()}
            nxt = d.get("next", "")
            out.append(
                DeliveryOut(
                    id=msg_id,
                    event_type=etype,
                    run_id=subject or None,
                    status=S(d["status"]),
                    created_at=from_ms(int(d["created"])),
                    next_attempt_at=from_ms(int(nxt)) if nxt and d["status"] == "pending" else None,
                    attempts=[Attempt.model_validate(json.loads(a)) for a in log],
                )
            )
        if gone:  # rows expired by retention: their listing entries go too
            async with self.redis.pipeline(transaction=False) as pipe:
                for st in (None, *S):
                    pipe.zrem(keys.listing(endpoint_id, st), *gone)
                await pipe.execute()
        return out, (ids[-1] if more and ids else None)

    async def trim_listings(self, *, older_than_ms: int) -> int:
        """Drop every endpoint's listing entries of messages created before `older_than_ms`, and its
        failed-at entries (what a heal replays) of failures before then.

        The rows themselves expire on their own; listings are sorted sets that would only grow.
        """
        floor = id_floor("msg", older_than_ms)
        removed = 0
        for raw in await self.redis.smembers(keys.ENDPOINTS):
            endpoint_id = raw.decode()
            async with self.redis.pipeline(transaction=False) as pipe:
                for status in (None, *S):
                    pipe.zremrangebylex(keys.listing(endpoint_id, status), "-", f"({floor}")
                pipe.zremrangebyscore(keys.failed_at(endpoint_id), "-inf", f"({older_than_ms}")
                removed += sum(await pipe.execute())
        return removed

    async def _message_head(self, message_id: str, stored: object) -> tuple[str, str]:
        """A message's (type, subject) from its stored string ('' each if it expired); one stored as
        a hash before that form (issue 15) answers GET with an error and is read by its fields."""
        if isinstance(stored, Exception):
            etype, subject = await self.redis.hmget(keys.message(message_id), ("type", "subject"))
            return (etype or b"").decode(), (subject or b"").decode()
        message = message_of(message_id, stored if isinstance(stored, bytes) else None)
        return (message.type, message.subject) if message is not None else ("", "")
