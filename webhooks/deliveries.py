"""DeliveryStore: messages, one delivery per message and endpoint, due queues and the attempt log."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from webhooks import keys, scripts
from webhooks.alerts import EVENT_LOG_MAX, Alert
from webhooks.batching import Arg, Batch, Call
from webhooks.catalog import EventType
from webhooks.delivery_reads import DeliveryReads
from webhooks.delivery_units import Delivery, Message, Recorded, message_of, test_message
from webhooks.ids import id_floor
from webhooks.lanes import lane_keys
from webhooks.models import Attempt, DeliveryStatus, Endpoint, format_timestamp, from_ms
from webhooks.outbox import OUTBOX_STREAM

MAX_LOG = 50
S = DeliveryStatus


@dataclass(frozen=True)
class Claim:
    """What one :meth:`DeliveryStore.claim` took: Redis's now (ms); per endpoint its id, stored hash
    (empty for a one-subject hook) and deliveries; and how long until the next is due (ms; 0 if some
    are overdue, None if there are none)."""

    now_ms: int
    batches: list[tuple[str, dict[bytes, bytes], list[Delivery]]]
    next_due_in_ms: int | None


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A hash as a Lua script returns HGETALL (a flat list of field, value) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _message(stored: bytes | list[bytes]) -> bytes | dict[bytes, bytes]:
    """A message as CLAIM returns it: its stored string, or a flat hash (stored before that form)."""
    return _pairs(stored) if isinstance(stored, list) else stored


def _delivery(
    dlv_id: str,
    raw: dict[bytes, bytes],
    raw_message: bytes | dict[bytes, bytes],
    claimed_until: int,
    now_ms: int,
    taken_mono: float,
) -> Delivery:
    """A claimed delivery from its stored row and message (HGETALL shapes)."""
    d = {k.decode(): v.decode() for k, v in raw.items()}
    return Delivery(
        id=dlv_id,
        message_id=d["msg"],
        endpoint_id=d["ep"],
        status=S(d["status"]),
        attempts=int(d["attempts"]),
        base=int(d.get("base", "0")),
        tenant=d["tenant"],
        url=d.get("url", ""),
        message=message_of(d["msg"], raw_message),
        claimed_until=claimed_until,
        taken_ms=now_ms,
        taken_mono=taken_mono,
        alerted=d.get("alerted") == "1",
        lane=d.get("lane", ""),
        seq=int(d.get("seq") or 0),
    )


class DeliveryStore(DeliveryReads):
    """All the delivery state, in Redis; the scripts keep queue, row and listings consistent."""

    def __init__(
        self, redis: Redis, *, failed_ttl_ms: int, delivered_ttl_ms: int, lane_gap_ms: int = 60_000
    ) -> None:
        self.redis = redis
        self.failed_ttl_ms = failed_ttl_ms
        self.delivered_ttl_ms = delivered_ttl_ms
        # How long a lane's head waits for an earlier message of its subject to be fanned out.
        self.lane_gap_ms = lane_gap_ms
        self._fan_out = redis.register_script(scripts.FAN_OUT.source)
        self._record = Batch(redis, scripts.RECORD, "record")
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._postpone = redis.register_script(scripts.POSTPONE)
        self._release = redis.register_script(scripts.RELEASE)
        self._claim = redis.register_script(scripts.CLAIM)
        due_prefix, due_suffix = keys.due("\0").split("\0")
        assert due_prefix == keys.endpoint(""), "CLAIM builds both keys from one prefix"
        self._claim_layout = [due_prefix, due_suffix, keys.delivery(""), keys.message("")]

    async def write(self, calls: Sequence[Call]) -> list[Any]:
        """Run calls of ``scripts.FAN_OUT`` (from :meth:`save_calls`, :meth:`schedule_calls`,
        :meth:`ack_call`) in order, in one step; their results."""
        if not calls:
            return []
        batch_keys, batch_args = scripts.FAN_OUT.pack(calls)
        return list(await self._fan_out(keys=batch_keys, args=batch_args))

    def save_calls(self, messages: Sequence[Message]) -> list[Call]:
        """Keep message bodies for as long as a failed delivery of them may be retried."""
        return [("save", [keys.message(m.id)], [m.record(), self.failed_ttl_ms]) for m in messages]

    @staticmethod
    def ack_call(group: str, entry_ids: Sequence[bytes | str]) -> list[Call]:
        """Acknowledge outbox entries (after the calls that wrote what they made)."""
        return [("ack", [OUTBOX_STREAM], [group, *entry_ids])] if entry_ids else []

    async def save_messages(self, messages: Sequence[Message]) -> None:
        """Keep message bodies for as long as a failed delivery of them may be retried."""
        await self.write(self.save_calls(messages))

    async def schedule(self, entries: Sequence[tuple[str, str, int, str, str]]) -> int:
        """Create pending deliveries, due now, unordered (see :meth:`schedule_calls`, which a fan-out
        uses for the rest); return how many were created."""
        return sum(int(r) for r in await self.write(self.schedule_calls(entries)))

    def schedule_calls(
        self,
        entries: Sequence[tuple[str, str, int, str, str]],
        *,
        delay_ms: int = 0,
        status: DeliveryStatus = S.pending,
        note: str = "",
        ordered: Collection[str] = (),
        sequences: Mapping[str, tuple[str, int]] | None = None,
    ) -> list[Call]:
        """Create deliveries (message id, endpoint id, created ms, tenant, url), due `delay_ms` from
        Redis's now; existing ones stay (each call's result: 1 if created).

        For the endpoints in `ordered`, a message with an entry in `sequences` (message id ->
        (subject, sequence)) joins that subject's lane instead (``webhooks.lanes``).
        """
        calls: list[Call] = []
        for msg_id, ep_id, created_ms, tenant, url in entries:
            dlv = keys.delivery_id(msg_id, ep_id)
            subject, seq = (sequences or {}).get(msg_id, ("", 0)) if ep_id in ordered else ("", 0)
            lane, lanes_index, active, fan = self._lane_keys(ep_id, subject)
            call_keys = [
                keys.delivery(dlv),
                keys.due(ep_id),
                keys.DUE_ENDPOINTS,
                keys.listing(ep_id),
                keys.listing(ep_id, status),
                keys.endpoint(ep_id),
                lane,
                lanes_index,
                active,
                fan,
            ]
            call_args: list[Arg] = [
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
                subject,
                seq,
                self.lane_gap_ms,
            ]
            calls.append(("schedule", call_keys, call_args))
        return calls

    async def claim(
        self, *, free: int, per_endpoint: int, busy: Mapping[str, int], claim_ms: int, scan: int = 1000
    ) -> Claim:
        """Claim up to `free` due deliveries across the most overdue endpoints, in one round trip
        (``scripts.CLAIM``): up to `per_endpoint` of an endpoint with nothing in flight, up to
        ``busy[id]`` of one with attempts in flight (0: none). Each comes with its row and message,
        each endpoint with its stored hash; claims last `claim_ms` (Redis's clock)."""
        args: list[str | int] = [scan, claim_ms, max(free, 0), per_endpoint, *self._claim_layout]
        for endpoint_id, slots in busy.items():
            args += [endpoint_id, max(slots, 0)]
        reply = await self._claim(keys=[keys.DUE_ENDPOINTS], args=args)
        taken_mono = time.monotonic()
        now_ms, until_ms, first = int(reply[0]), int(reply[1]), int(reply[2])
        batches: list[tuple[str, dict[bytes, bytes], list[Delivery]]] = []
        for raw_ep, flat_endpoint, *rows in reply[3:]:
            taken = [
                _delivery(i.decode(), _pairs(row), _message(msg), until_ms, now_ms, taken_mono)
                for i, row, msg in rows
            ]
            batches.append((raw_ep.decode(), _pairs(flat_endpoint), taken))
        return Claim(now_ms, batches, None if first < 0 else max(0, first - now_ms))

    @staticmethod
    def _lane_keys(endpoint_id: str, subject: str) -> tuple[str, str, str, str]:
        """(lane, lane index, lane active, fan-out watermark): unused by the scripts without a subject."""
        lane, active, fan, index = lane_keys(endpoint_id, subject or "-")
        return lane, index, active, fan

    def _row_keys(self, dlv: Delivery) -> list[str]:
        ep = dlv.endpoint_id
        lane, lanes_index, active, fan = self._lane_keys(ep, dlv.lane)
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
            lane,
            active,
            fan,
            lanes_index,
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
            self._row_keys(dlv),
            [
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
                self.lane_gap_ms,
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
        """Send a delivery again now (same message, same webhook-id), with a fresh retry schedule;
        one of an ordered lane goes back into it, in its turn (``scripts.REQUEUE``)."""
        dlv_id = keys.delivery_id(message_id, endpoint_id)
        lane = await self.redis.hget(keys.delivery(dlv_id), "lane")
        dlv = Delivery(
            dlv_id, message_id, endpoint_id, S.pending, 0, 0, "", "", lane=lane.decode() if lane else ""
        )
        done = await self._requeue(
            keys=self._row_keys(dlv)[:10] + self._row_keys(dlv)[12:],
            args=[dlv.id, message_id, "", endpoint_id, self.lane_gap_ms],
        )
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
