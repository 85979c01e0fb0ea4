"""Retention: index entries leave with the executions they point at.

A terminal execution and its event log expire by TTL (``ORCH_RUN_RETENTION_SECONDS``). Index
members are time-ordered ids, so everything created before a cutoff is one ZREMRANGEBYLEX per
index; the cutoff leaves a day of margin for runs that were long queued or running.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from orchestrator.runs import keys
from orchestrator.runs.listing import tenant_flows
from webhooks.ids import id_floor
from webhooks.models import now_ms as clock_ms

logger = logging.getLogger(__name__)

MARGIN_SECONDS = 24 * 3600
LOCK = f"{keys.PREFIX}:lock:retention"


async def trim_indexes(
    redis: Redis, *, retention_seconds: int, now_ms: int | None = None, every_seconds: int = 60
) -> int | None:
    """Drop index entries older than retention + margin; at most once per `every_seconds` cluster-wide.

    Returns how many entries went, or None when another process trimmed recently.
    """
    if not await redis.set(LOCK, b"1", nx=True, ex=every_seconds):
        return None
    now = clock_ms() if now_ms is None else now_ms
    cutoff = id_floor("exec", now - (retention_seconds + MARGIN_SECONDS) * 1000)
    removed = 0
    for tenant, flows in (await tenant_flows(redis)).items():
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys.index_keys(tenant, flows):
                pipe.zremrangebylex(key, "-", f"({cutoff}")
            removed += sum(await pipe.execute())
    if removed:
        logger.info("retention removed %d index entries older than %s", removed, cutoff)
    return removed
