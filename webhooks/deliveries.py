"""DeliveryStore: messages, one delivery per message and endpoint, due queues and the attempt log."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from webhooks import keys, scripts
from webhooks.ids import id_floor, new_id
from webhooks.models import Attempt, DeliveryOut, DeliveryStatus, Endpoint, format_timestamp, from_ms

MAX_LOG = 50
S = DeliveryStatus


@dataclass
class Message:
    """What goes on the wire, and who it is about."""

    id: str
    type: str
    tenant: str
    subject: str
    body: str
    created_ms: int


@dataclass
class DeliveryState:
    """Where one delivery stands: status, next attempt (RFC 3339) while pending, every attempt."""

    status: str
    next_attempt_at: str | None
    attempts: list[Attempt]


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

    @property
    def attempt_number(self) -> int:
        """1-based number of the next attempt within the current retry round."""
        return self.attempts - self.base + 1


TEST_EVENT = "webhook.test"


def _message(message_id: str, raw: dict[bytes, bytes]) -> Message | None:
    if not raw:
        return None
    d = {k.decode(): v.decode() for k, v in raw.items()}
    return Message(message_id, d["type"], d["tenant"], d["subject"], d["body"], int(d["created"]))


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


class DeliveryStore:
    """All the delivery state, in Redis; the scripts keep queue, row and listings consistent."""

    def __init__(self, redis: Redis, *, failed_ttl_ms: int, delivered_ttl_ms: int) -> None:
        self.redis = redis
        self.failed_ttl_ms = failed_ttl_ms
        self.delivered_ttl_ms = delivered_ttl_ms
        self._schedule = redis.register_script(scripts.SCHEDULE)
        self._take = redis.register_script(scripts.TAKE)
        self._record = redis.register_script(scripts.RECORD)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._postpone = redis.register_script(scripts.POSTPONE)
        self._release = redis.register_script(scripts.RELEASE)
        self._due = redis.register_script(scripts.DUE)
        self._next = redis.register_script(scripts.NEXT)

    async def save_messages(self, messages: Sequence[Message]) -> None:
        """Keep message bodies for as long as a failed delivery of them may be retried."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in messages:
                key = keys.message(m.id)
                pipe.hset(
                    key,
                    mapping={
                        "type": m.type,
                        "tenant": m.tenant,
                        "subject": m.subject,
                        "body": m.body,
                        "created": m.created_ms,
                    },
                )
                pipe.pexpire(key, self.failed_ttl_ms)
            await pipe.execute()

    async def schedule(
        self,
        entries: Sequence[tuple[str, str, int, str, str]],
        *,
        delay_ms: int = 0,
        status: DeliveryStatus = S.pending,
        note: str = "",
    ) -> int:
        """Create deliveries (message id, endpoint id, created ms, tenant, url), due `delay_ms` from
        Redis's now; existing ones stay. Returns how many were created."""
        if not entries:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for msg_id, ep_id, created_ms, tenant, url in entries:
                dlv = keys.delivery_id(msg_id, ep_id)
                await self._schedule(
                    keys=[
                        keys.delivery(dlv),
                        keys.due(ep_id),
                        keys.DUE_ENDPOINTS,
                        keys.listing(ep_id),
                        keys.listing(ep_id, status),
                        keys.endpoint(ep_id),
                    ],
                    args=[
                        dlv,
                        msg_id,
                        ep_id,
                        created_ms,
                        delay_ms,
                        tenant,
                        url,
                        status.value,
                        self.failed_ttl_ms,
                        note,
                    ],
                    client=pipe,
                )
            results = await pipe.execute()
        return sum(int(r) for r in results)

    async def due_endpoints(self, *, limit: int = 1000) -> list[str]:
        """Endpoints with at least one delivery due now (Redis's clock), most overdue first."""
        found = await self._due(keys=[keys.DUE_ENDPOINTS], args=[limit])
        return [i.decode() for i in found[1:]]

    async def next_due_in_ms(self) -> int | None:
        """How long until the earliest delivery of any endpoint is due (0 if overdue), or None."""
        now, first = await self._next(keys=[keys.DUE_ENDPOINTS])
        return None if int(first) < 0 else max(0, int(first) - int(now))

    async def take(self, endpoint_id: str, *, n: int, claim_ms: int) -> tuple[list[Delivery], int]:
        """Claim up to `n` due deliveries of one endpoint for `claim_ms` (hidden from other dispatchers).

        Returns them with Redis's now (ms), by which their signing secrets are chosen.
        """
        reply = await self._take(
            keys=[keys.due(endpoint_id), keys.DUE_ENDPOINTS], args=[n, claim_ms, endpoint_id]
        )
        taken_mono = time.monotonic()
        now_ms, claim_until_ms, ids = int(reply[0]), int(reply[1]), reply[2:]
        if not ids:
            return [], now_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(keys.delivery(i.decode()))
                pipe.hgetall(keys.message(i.decode().split(":", 1)[0]))
            rows = await pipe.execute()
        out = []
        for n_row, raw_id in enumerate(ids):
            raw, raw_message = rows[2 * n_row], rows[2 * n_row + 1]
            dlv_id = raw_id.decode()
            if not raw:  # the row is gone (endpoint deleted): drop the queue entry
                await self.redis.zrem(keys.due(endpoint_id), dlv_id)
                continue
            d = {k.decode(): v.decode() for k, v in raw.items()}
            out.append(
                Delivery(
                    id=dlv_id,
                    message_id=d["msg"],
                    endpoint_id=d["ep"],
                    status=S(d["status"]),
                    attempts=int(d["attempts"]),
                    base=int(d.get("base", "0")),
                    tenant=d["tenant"],
                    url=d.get("url", ""),
                    message=_message(d["msg"], raw_message),
                    claimed_until=claim_until_ms,
                    taken_ms=now_ms,
                    taken_mono=taken_mono,
                )
            )
        return out, now_ms

    def _row_keys(self, dlv: Delivery) -> list[str]:
        ep = dlv.endpoint_id
        return [
            keys.delivery(dlv.id),
            keys.delivery_log(dlv.id),
            keys.due(ep),
            keys.DUE_ENDPOINTS,
            keys.listing(ep, S.pending),
            keys.listing(ep, S.succeeded),
            keys.listing(ep, S.failed),
            keys.message(dlv.message_id),
        ]

    async def record(
        self,
        dlv: Delivery,
        attempt: Attempt,
        *,
        status: DeliveryStatus,
        delay_ms: int | None,
        sent: bool = True,
        fenced: bool = False,
    ) -> bool:
        """Log `attempt` and move the delivery to `status` (pending: due again `delay_ms` from now).

        `sent=False` logs a note without counting an attempt (nothing went on the wire).
        `fenced=True` writes only while our claim still holds (its score is still in the due queue):
        a retry after an error that may have come after the script ran is then a no-op the second
        time, and one made after the claim passed to another dispatcher changes nothing.
        """
        ttl = self.delivered_ttl_ms if status is S.succeeded else self.failed_ttl_ms
        done = await self._record(
            keys=self._row_keys(dlv),
            args=[
                dlv.id,
                dlv.message_id,
                attempt.model_dump_json(by_alias=True),
                status.value,
                "" if delay_ms is None else delay_ms,
                ttl,
                dlv.endpoint_id,
                MAX_LOG,
                "1" if sent else "0",
                dlv.claimed_until if fenced and dlv.claimed_until is not None else "",
            ],
        )
        return bool(done)

    async def postpone(self, dlv: Delivery, *, min_ms: int) -> None:
        """Park a pending delivery until its endpoint's next probe (at least `min_ms`), no attempt spent."""
        await self._postpone(
            keys=[keys.due(dlv.endpoint_id), keys.DUE_ENDPOINTS, keys.PROBES],
            args=[dlv.id, min_ms, dlv.endpoint_id],
        )

    async def release(self, endpoint_id: str) -> int:
        """Make every parked delivery of the endpoint due now; return how many."""
        return int(
            await self._release(keys=[keys.due(endpoint_id), keys.DUE_ENDPOINTS], args=["", endpoint_id])
        )

    async def drop(self, dlv: Delivery) -> None:
        """Forget a delivery whose endpoint was deleted."""
        async with self.redis.pipeline(transaction=True) as tx:
            tx.delete(keys.delivery(dlv.id), keys.delivery_log(dlv.id))
            tx.zrem(keys.due(dlv.endpoint_id), dlv.id)
            await tx.execute()

    async def requeue(self, message_id: str, endpoint_id: str) -> bool:
        """Send a delivery again now (same message, same webhook-id), with a fresh retry schedule."""
        dlv = Delivery(
            keys.delivery_id(message_id, endpoint_id), message_id, endpoint_id, S.pending, 0, 0, "", ""
        )
        done = await self._requeue(keys=self._row_keys(dlv), args=[dlv.id, message_id, "", endpoint_id])
        if done:
            await self.redis.pexpire(keys.message(message_id), self.failed_ttl_ms)
        return bool(done)

    async def send_test(self, endpoint: Endpoint, *, now_ms: int) -> str:
        """Queue a ``webhook.test`` message to `endpoint` alone, due now; return its message id.

        `now_ms` only labels the message (its id and timestamp).
        """
        message = test_message(endpoint, now_ms=now_ms, note="test message sent from the API")
        await self.save_messages([message])
        await self.schedule([(message.id, endpoint.id, now_ms, endpoint.tenant, "")])
        return message.id

    async def recover(self, endpoint_id: str, since_ms: int) -> int:
        """Send every failed message of the endpoint created since `since_ms` again; return how many."""
        count = 0
        for msg_id in await self.failed_since(endpoint_id, since_ms):
            count += await self.requeue(msg_id, endpoint_id)
        return count

    async def failed_since(self, endpoint_id: str, since_ms: int) -> list[str]:
        """Message ids of the endpoint's failed deliveries created at or after `since_ms`."""
        floor = id_floor("msg", since_ms)
        ids = await self.redis.zrangebylex(keys.listing(endpoint_id, S.failed), f"[{floor}", "+")
        return [i.decode() for i in ids]

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
                pipe.hmget(keys.message(msg_id), ("type", "subject"))
            rows = await pipe.execute()
        out: list[DeliveryOut] = []
        gone: list[str] = []
        for i, msg_id in enumerate(ids):
            raw, log, (etype, subject) = rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]
            if not raw:
                gone.append(msg_id)
                continue
            d = {k.decode(): v.decode() for k, v in raw.items()}
            nxt = d.get("next", "")
            out.append(
                DeliveryOut(
                    id=msg_id,
                    event_type=etype.decode() if etype else "",
                    run_id=subject.decode() if subject else None,
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
        """Drop every endpoint's listing entries of messages created before `older_than_ms`.

        The rows themselves expire on their own; listings are sorted sets that would only grow.
        """
        floor = id_floor("msg", older_than_ms)
        removed = 0
        for raw in await self.redis.smembers(keys.ENDPOINTS):
            endpoint_id = raw.decode()
            async with self.redis.pipeline(transaction=False) as pipe:
                for status in (None, *S):
                    pipe.zremrangebylex(keys.listing(endpoint_id, status), "-", f"({floor}")
                removed += sum(await pipe.execute())
        return removed
