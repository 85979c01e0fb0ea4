"""Consumers: the dispatchers reading the outbox group, their liveness, and the group's upkeep.

A dispatcher that dies holding outbox entries it read but never acknowledged would otherwise leave
them until the idle reclaim (``reclaim_idle_seconds``, 30 s). Each dispatcher refreshes a beacon key
with a short expiry; when a member's beacon is gone, any other member claims its entries at once,
so a crash costs about ``liveness_seconds`` of delay instead. Entries of a member that is alive but
stuck are still reclaimed once idle, and the stream is trimmed up to what every member is done with.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from webhooks import keys, scripts
from webhooks.outbox import OUTBOX_STREAM

logger = logging.getLogger(__name__)
Entry = tuple[bytes, dict[bytes, bytes]]


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Membership:
    """One dispatcher's membership of the outbox consumer group."""

    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        consumer: str,
        liveness_seconds: float,
        reclaim_idle_seconds: float,
        batch: int = 200,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.liveness_ms = int(liveness_seconds * 1000)
        self.idle_ms = int(reclaim_idle_seconds * 1000)
        self.batch = batch
        self._drop = redis.register_script(scripts.DROP_CONSUMER)

    async def beat(self) -> None:
        """Say this consumer is alive for the next `liveness_seconds`."""
        await self.redis.set(keys.dispatcher_alive(self.consumer), b"1", px=self.liveness_ms)

    async def leave(self) -> None:
        """On a clean stop: drop the beacon, and the consumer itself if it holds nothing."""
        await self.redis.delete(keys.dispatcher_alive(self.consumer))
        with contextlib.suppress(ResponseError):  # NOGROUP: nothing to tidy
            await self.drop(self.consumer)

    async def drop(self, name: str) -> bool:
        """Remove member `name` from the group if it has no beacon and holds nothing (one atomic step)."""
        return bool(
            await self._drop(keys=[OUTBOX_STREAM, keys.dispatcher_alive(name)], args=[self.group, name])
        )

    async def orphans(self) -> AsyncIterator[list[Entry]]:
        """Claim, batch by batch, the unacknowledged entries of members whose beacon is gone.

        A dead member with nothing pending is removed from the group. Claims require the entries
        to have been idle for half the liveness window, so two survivors never both take a batch
        (and if they did, a fan-out repeated finds the same delivery ids).
        """
        try:
            members = await self.redis.xinfo_consumers(OUTBOX_STREAM, self.group)
        except ResponseError:  # NOGROUP: the group is created by the dispatcher's loop
            return
        for member in members:
            name = _name(member["name"])
            if name == self.consumer or await self.redis.exists(keys.dispatcher_alive(name)):
                continue
            if not member["pending"]:
                # Silent for two beacon lifetimes: gone (checked again atomically as it is removed;
                # a live one removed anyway is re-created by its next read, holding nothing).
                if member["idle"] > 2 * self.liveness_ms:
                    await self.drop(name)
                continue
            while True:
                held = await self.redis.xpending_range(
                    OUTBOX_STREAM, self.group, min="-", max="+", count=self.batch, consumername=name
                )
                if not held:
                    break
                claimed = await self.redis.xclaim(
                    OUTBOX_STREAM,
                    self.group,
                    self.consumer,
                    self.liveness_ms // 2,
                    [h["message_id"] for h in held],
                )
                if not claimed:
                    break  # another member took them first
                logger.warning("took over %d outbox entries of dispatcher %s (gone)", len(claimed), name)
                entries = [e for e in claimed if e and e[1]]
                # deleted from the stream meanwhile: no fields (and, before Redis 7, no id either)
                emptied = [e[0] for e in claimed if e and e[0] is not None and not e[1]]
                if emptied:  # nothing left to deliver
                    await self.redis.xack(OUTBOX_STREAM, self.group, *emptied)
                if entries:
                    yield entries

    async def stalled(self) -> AsyncIterator[list[Entry]]:
        """Claim, batch by batch, entries any member has held unacknowledged for `reclaim_idle_seconds`."""
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                OUTBOX_STREAM, self.group, self.consumer, self.idle_ms, start_id=start, count=self.batch
            )
            start, entries = reply[0], reply[1]
            entries = [e for e in entries if e[1]]  # entries trimmed meanwhile come back empty
            if entries:
                logger.warning("reclaimed %d outbox entries from a stalled dispatcher", len(entries))
                yield entries
            if start in (b"0-0", "0-0"):
                return

    async def trim(self) -> None:
        """Drop outbox entries every member is done with (acknowledged, not pending anywhere)."""
        groups = await self.redis.xinfo_groups(OUTBOX_STREAM)
        ours = next((g for g in groups if _name(g["name"]) == self.group), None)
        if ours is None:
            return
        summary = await self.redis.xpending(OUTBOX_STREAM, self.group)
        if summary and summary.get("pending"):
            floor = _name(summary["min"])  # keep the oldest unacknowledged entry and what follows
        else:
            ms, _, seq = _name(ours["last-delivered-id"]).partition("-")
            floor = f"{ms}-{int(seq or 0) + 1}"  # everything up to the last delivered entry can go
        if floor not in ("0-0", "0-1"):
            await self.redis.xtrim(OUTBOX_STREAM, minid=floor, approximate=False)
