"""Process metrics kept in Redis, so any API process can expose what every worker and dispatcher did.

Also the delivery gauges (outbox length, per-endpoint backlog), read from webhooks' own keys, so a
mounting app shows them without knowing those keys.

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
from dataclasses import dataclass

from redis.asyncio import Redis

from webhooks import keys
from webhooks.ids import decode_ms, id_floor
from webhooks.models import DeliveryStatus
from webhooks.outbox import OUTBOX_STREAM

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


@dataclass(frozen=True)
class Counter:
    """A counter as every process flushed it, summed: ``name{labels} value``."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Histogram:
    """A histogram as every process flushed it: cumulative ``(le, count)`` buckets and the sum."""

    name: str
    labels: dict[str, str]
    buckets: list[tuple[str, float]]
    sum: float


def _split(field: str) -> tuple[str, dict[str, str], str | None]:
    name, _, rest = field.partition("|")
    labels_part, _, suffix = rest.partition("|")
    labels = dict(p.split("=", 1) for p in labels_part.split(",") if p)
    return name, labels, suffix or None


async def read_flushed(redis: Redis) -> tuple[list[Counter], list[Histogram]]:
    """Every counter and histogram any process flushed (the format of :class:`MetricsBuffer`)."""
    raw: dict[bytes, bytes] = await redis.hgetall(METRICS_KEY)
    counters: list[Counter] = []
    parts: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, float]] = defaultdict(dict)
    for key, value in raw.items():
        name, labels, suffix = _split(key.decode())
        if suffix is None:
            counters.append(Counter(name, labels, float(value)))
        else:
            parts[(name, tuple(sorted(labels.items())))][suffix] = float(value)
    histograms: list[Histogram] = []
    for (name, label_items), found in parts.items():
        running = 0.0
        buckets = []
        for le in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
            running += found.get(le, 0.0)
            buckets.append((le, running))
        histograms.append(Histogram(name, dict(label_items), buckets, found.get("sum", 0.0)))
    return counters, histograms


@dataclass(frozen=True)
class EndpointGauge:
    """One endpoint's backlog: pending deliveries and the age of the oldest (seconds)."""

    endpoint_id: str
    backlog: int
    oldest_pending_seconds: float


@dataclass(frozen=True)
class DeliveryGauges:
    """The delivery side's current state, counted from its working keys at read time."""

    outbox_length: int
    endpoints: list[EndpointGauge]


async def delivery_gauges(redis: Redis, *, now_ms: int) -> DeliveryGauges:
    """Outbox length and every endpoint's backlog (O(endpoints), two round trips)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(OUTBOX_STREAM)
        pipe.smembers(keys.ENDPOINTS)
        outbox, endpoint_ids = await pipe.execute()
    ids = sorted(e.decode() for e in endpoint_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for endpoint_id in ids:
            pipe.zcard(keys.due(endpoint_id))
            pipe.zrange(keys.listing(endpoint_id, DeliveryStatus.pending), 0, 0)
        rows = await pipe.execute()
    endpoints = []
    for i, endpoint_id in enumerate(ids):
        first = rows[2 * i + 1]
        age = max(0.0, (now_ms - decode_ms(first[0].decode())) / 1000) if first else 0.0
        endpoints.append(EndpointGauge(endpoint_id, int(rows[2 * i]), age))
    return DeliveryGauges(outbox_length=int(outbox), endpoints=endpoints)


@dataclass(frozen=True)
class EndpointHealth:
    """One endpoint's deliveries: pending backlog and its oldest age, outcomes since a time, next probe."""

    endpoint_id: str
    backlog: int
    oldest_pending_seconds: float
    succeeded: int
    failed: int
    pending: int
    next_probe_ms: int | None

    @property
    def success_rate(self) -> float | None:
        """Succeeded / (succeeded + failed) of the messages counted; None when none ended yet."""
        ended = self.succeeded + self.failed
        return self.succeeded / ended if ended else None


async def endpoint_health(
    redis: Redis, endpoint_ids: list[str], *, now_ms: int, since_ms: int
) -> list[EndpointHealth]:
    """Health of each endpoint (messages created since `since_ms` for the outcomes; one round trip)."""
    floor = f"[{id_floor('msg', since_ms)}"
    async with redis.pipeline(transaction=False) as pipe:
        for endpoint_id in endpoint_ids:
            pipe.zcard(keys.due(endpoint_id))
            pipe.zrange(keys.listing(endpoint_id, DeliveryStatus.pending), 0, 0)
            for status in (DeliveryStatus.succeeded, DeliveryStatus.failed, DeliveryStatus.pending):
                pipe.zlexcount(keys.listing(endpoint_id, status), floor, "+")
            pipe.zscore(keys.PROBES, endpoint_id)
        rows = await pipe.execute()
    out = []
    for i, endpoint_id in enumerate(endpoint_ids):
        backlog, first, succeeded, failed, pending, probe = rows[6 * i : 6 * i + 6]
        age = max(0.0, (now_ms - decode_ms(first[0].decode())) / 1000) if first else 0.0
        out.append(
            EndpointHealth(
                endpoint_id=endpoint_id,
                backlog=int(backlog),
                oldest_pending_seconds=age,
                succeeded=int(succeeded),
                failed=int(failed),
                pending=int(pending),
                next_probe_ms=int(probe) if probe is not None else None,
            )
        )
    return out
