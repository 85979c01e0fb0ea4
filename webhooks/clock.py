"""This host's clock corrected to Redis's, for the times people read (labels, not deadlines).

DESIGN.md "One clock": every deadline one process writes and another compares is computed inside
a Redis script from ``TIME``. The times that are only shown (an execution's ``createdAt``,
``duration``, an attempt's ``at``) come from here: the host clock plus the offset to Redis measured
with ``TIME`` at start and every ``every`` seconds, so a worker whose clock is 30 s off still
labels its runs correctly and durations never go negative.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from redis.asyncio import Redis

logger = logging.getLogger(__name__)


class RedisClock:
    """Host time + the measured offset to Redis's ``TIME`` (milliseconds)."""

    def __init__(self) -> None:
        self.offset_ms = 0.0
        self.synced = False

    def now_ms(self) -> int:
        """Redis's time now, as unix milliseconds (to within a round trip)."""
        return int(time.time() * 1000 + self.offset_ms)

    def now(self) -> datetime:
        """Redis's time now, as a UTC datetime."""
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    async def sync(self, redis: Redis) -> None:
        """Measure the offset once: the midpoint of a ``TIME`` round trip."""
        before = time.time()
        seconds, micros = await redis.time()
        after = time.time()
        offset = seconds * 1000 + micros / 1000 - (before + after) * 500
        if self.synced and abs(offset - self.offset_ms) > 1000:
            logger.warning(
                "host clock moved %.0f ms against Redis's; labels follow Redis", offset - self.offset_ms
            )
        self.offset_ms = offset
        self.synced = True

    async def run(self, redis: Redis, stop: asyncio.Event, *, every: float = 30.0) -> None:
        """Re-measure every `every` seconds until `stop` (errors are retried at the next turn)."""
        while not stop.is_set():
            try:
                await self.sync(redis)
            except Exception as exc:
                logger.debug("clock sync failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
