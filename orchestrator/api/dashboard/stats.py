"""The Overview page's numbers, for one tenant: runs per status over time, and the endpoints' health.

Runs are counted from the tenant's per-status indexes by id range (ids sort by creation), so a
bucket costs one ZLEXCOUNT whatever the number of runs; the delivery side comes from
``webhooks.metrics.endpoint_health``. Times are Redis's (the API's synced clock).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks.ids import id_floor
from webhooks.metrics import EndpointHealth, endpoint_health
from webhooks.models import Endpoint, format_timestamp, from_ms

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass
class Series:
    """Runs created in each bucket of a window, by their current status."""

    title: str
    labels: list[str]  # the start of each bucket (UTC, HH:MM)
    counts: dict[str, list[int]]  # status -> count per bucket

    @property
    def totals(self) -> dict[str, int]:
        """Runs per status over the whole window."""
        return {status: sum(values) for status, values in self.counts.items()}

    def chart(self) -> dict[str, Any]:
        """The data the page's chart script reads."""
        return {"labels": self.labels, "series": self.counts}


async def run_series(
    redis: Redis, tenant: str, *, now_ms: int, window_ms: int, buckets: int, title: str
) -> Series:
    """Runs of `tenant` created in each of `buckets` slices of the last `window_ms`, per status."""
    step = window_ms // buckets
    start = now_ms - window_ms
    edges = [start + i * step for i in range(buckets + 1)]
    edges[-1] = now_ms + 1  # the last bucket takes everything up to now
    statuses = list(ExecutionStatus)
    async with redis.pipeline(transaction=False) as pipe:
        for status in statuses:
            index = keys.index(tenant, status=status)
            for low, high in itertools.pairwise(edges):
                pipe.zlexcount(index, f"[{id_floor('exec', low)}", f"({id_floor('exec', high)}")
        counts = await pipe.execute()
    labels = [from_ms(edge).strftime("%H:%M") for edge in edges[:-1]]
    return Series(
        title=title,
        labels=labels,
        counts={
            s.value: [int(n) for n in counts[i * buckets : (i + 1) * buckets]] for i, s in enumerate(statuses)
        },
    )


@dataclass
class EndpointRow:
    """One endpoint as the Overview and Endpoints pages show its health."""

    endpoint: Endpoint
    health: EndpointHealth

    @property
    def state(self) -> str:
        """``healthy``, ``failing`` (failures without a success since), ``healing`` (disabled, being
        probed), or ``disabled``."""
        if not self.endpoint.enabled:
            return "healing" if self.health.next_probe_ms is not None else "disabled"
        return "failing" if self.endpoint.failing_since is not None else "healthy"

    @property
    def failing_since(self) -> str | None:
        """When the current run of failures began (RFC 3339), if one is going on."""
        since = self.endpoint.failing_since
        return format_timestamp(from_ms(since)) if since is not None else None

    @property
    def next_probe(self) -> str | None:
        """When a disabled endpoint is probed next (RFC 3339)."""
        probe = self.health.next_probe_ms
        return format_timestamp(from_ms(probe)) if probe is not None else None


async def endpoint_rows(redis: Redis, endpoints: list[Endpoint], *, now_ms: int) -> list[EndpointRow]:
    """Each endpoint with its health over the last day."""
    health = await endpoint_health(redis, [e.id for e in endpoints], now_ms=now_ms, since_ms=now_ms - DAY_MS)
    return [EndpointRow(e, h) for e, h in zip(endpoints, health, strict=True)]


@dataclass
class Overview:
    """Everything on the Overview page."""

    hour: Series
    day: Series
    endpoints: list[EndpointRow]

    @property
    def deliveries(self) -> dict[str, int]:
        """Messages of the last day across the tenant's endpoints, by outcome."""
        rows = [r.health for r in self.endpoints]
        return {
            "succeeded": sum(h.succeeded for h in rows),
            "failed": sum(h.failed for h in rows),
            "pending": sum(h.pending for h in rows),
        }

    @property
    def success_rate(self) -> float | None:
        """Succeeded / (succeeded + failed) over the last day; None when nothing ended."""
        d = self.deliveries
        ended = d["succeeded"] + d["failed"]
        return d["succeeded"] / ended if ended else None

    @property
    def troubled(self) -> list[EndpointRow]:
        """Endpoints failing, healing or disabled."""
        return [r for r in self.endpoints if r.state != "healthy"]

    def charts(self) -> dict[str, Any]:
        """The data of every chart on the page (read by ``static/charts.js``)."""
        return {
            "hour": self.hour.chart(),
            "day": self.day.chart(),
            "deliveries": self.deliveries,
            "backlog": {
                "labels": [r.endpoint.url for r in self.endpoints],
                "backlog": [r.health.backlog for r in self.endpoints],
                "oldest": [round(r.health.oldest_pending_seconds, 1) for r in self.endpoints],
            },
        }


async def overview(redis: Redis, tenant: str, endpoints: list[Endpoint], *, now_ms: int) -> Overview:
    """The Overview of `tenant` at `now_ms`."""
    return Overview(
        hour=await run_series(redis, tenant, now_ms=now_ms, window_ms=HOUR_MS, buckets=12, title="Last hour"),
        day=await run_series(
            redis, tenant, now_ms=now_ms, window_ms=DAY_MS, buckets=24, title="Last 24 hours"
        ),
        endpoints=await endpoint_rows(redis, endpoints, now_ms=now_ms),
    )
