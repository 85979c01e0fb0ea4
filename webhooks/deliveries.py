"""DeliveryStore: messages, one delivery per message and endpoint, due queues and the attempt log."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from webhooks import keys, scripts
from webhooks.alerts import EVENT_LOG_MAX, Alert
from webhooks.catalog import EventType
from webhooks.delivery_reads import DeliveryReads
from webhooks.ids import id_floor, new_id
from webhooks.models import Attempt, DeliveryStatus, Endpoint, format_timestamp, from_ms
from webhooks.outbox import OUTBOX_STREAM

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


class DeliveryStore(DeliveryReads):
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
                    alerted=d.get("alerted") == "1",
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
            keys.endpoint(ep),
            keys.failed_at(ep),
            OUTBOX_STREAM,
            keys.endpoint_events(ep),
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
        health: str = "",
        alerts: Sequence[tuple[str, Alert]] = (),
    ) -> Recorded:
        """Log `attempt` and move the delivery to `status` (pending: due again `delay_ms` from now).

        `sent=False` logs a note without counting an attempt (nothing went on the wire).
        `fenced=True` writes only while our claim still holds (its score is still in the due queue):
        a retry after an error that may have come after the script ran is then a no-op the second
        time, and one made after the claim passed to another dispatcher changes nothing.
        `health` (``fail`` or ``ok``) updates the endpoint's failure streak in the same step; each of
        `alerts` is appended with it, ``("x", alert)`` only if the delivery ends failed, ``("a", alert)``
        always (``webhooks.alerts``). See ``scripts.RECORD``.
        """
        ttl = self.delivered_ttl_ms if status is S.succeeded else self.failed_ttl_ms
        reply = await self._record(
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
                health,
                dlv.taken_ms,
                EVENT_LOG_MAX,
                len(alerts),
                *(arg for when, one in alerts for arg in (when, *one.args())),
            ],
        )
        if not int(reply[0]):
            return Recorded(done=False)
        since = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        return Recorded(
            done=True,
            failing_since=int(since) if since else None,
            now_ms=int(reply[2]),
            heal=reply[3] in (b"1", "1"),
        )

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

    async def send_test(self, endpoint: Endpoint, *, now_ms: int, event: EventType | None = None) -> str:
        """Queue a ``webhook.test`` message (or `event`'s example) to `endpoint` alone, due now;
        return its message id. `now_ms` only labels the message (its id and timestamp)."""
        message = test_message(endpoint, now_ms=now_ms, note="test message sent from the API")
        if event is not None:
            body = json.dumps(event.body_example(format_timestamp(from_ms(now_ms))), separators=(",", ":"))
            message = Message(message.id, event.name, endpoint.tenant, endpoint.id, body, now_ms)
        await self.save_messages([message])
        await self.schedule([(message.id, endpoint.id, now_ms, endpoint.tenant, "")])
        return message.id

    async def replay_failed(self, endpoint_id: str, since_ms: int) -> int:
        """Send again every message of the endpoint that *failed* at or after `since_ms` (Redis's ms,
        whenever it was created): what a heal owes (``failed-at``); return how many."""
        count = 0
        for raw in await self.redis.zrangebyscore(keys.failed_at(endpoint_id), since_ms, "+inf"):
            count += await self.requeue(raw.decode(), endpoint_id)
        return count

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
