"""Process metrics kept in Redis, so any API process can expose what every worker and dispatcher did.

Each process aggregates in memory and flushes once a second (one pipeline), so observing costs
no round trip. Counters and histogram buckets are plain hash fields:
``name|label=value,...`` for counters, ``name|labels|le`` / ``|sum`` / ``|count`` for histograms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping

from redis.asyncio import Redis

logger = logging.getLogger(__name__)

METRICS_KEY = "metrics:counters"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def labels_text(labels: Mapping[str, str]) -> str:
    """Labels as stored: ``a=1,b=2`` in key order."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class MetricsBuffer:
    """In-process counters and histograms, flushed to Redis by ``run()`` or ``flush()``."""

    def __init__(self, redis: Redis, *, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.redis = redis
        self.buckets = buckets
        self._ints: dict[str, int] = defaultdict(int)
        self._floats: dict[str, float] = defaultdict(float)

    def inc(self, name: str, labels: Mapping[str, str] | None = None, by: int = 1) -> None:
        """Add to a counter."""
        self._ints[f"{name}|{labels_text(labels or {})}"] += by

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Record one observation of a histogram."""
        base = f"{name}|{labels_text(labels or {})}"
        le = next((b for b in self.buckets if value <= b), None)
        self._ints[f"{base}|{le if le is not None else '+Inf'}"] += 1
        self._ints[f"{base}|count"] += 1
        self._floats[f"{base}|sum"] += value

    async def flush(self) -> None:
        """Send what was aggregated since the last flush (one round trip)."""
        ints, floats = self._ints, self._floats
        if not ints and not floats:
            return
        self._ints, self._floats = defaultdict(int), defaultdict(float)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for field, n in ints.items():
                    pipe.hincrby(METRICS_KEY, field, n)
                for field, x in floats.items():
                    pipe.hincrbyfloat(METRICS_KEY, field, x)
                await pipe.execute()
        except Exception:
            # Metrics are best effort: put them back for the next flush rather than lose them.
            for field, n in ints.items():
                self._ints[field] += n
            for field, x in floats.items():
                self._floats[field] += x
            raise

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        """Flush every `every` seconds until `stop`, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            try:
                await self.flush()
            except Exception as exc:
                logger.warning("metrics flush failed: %s", exc)
