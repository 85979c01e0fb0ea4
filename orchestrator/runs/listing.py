"""Listing runs: the per-tenant indexes, read a page at a time, and the tenants and flows that name them.

Each tenant has one sorted set per (flow?, status?) whose members are time-ordered run ids (scores
all 0), so a page costs O(log n + page) and a cursor (the last id of a page) is stable under
concurrent inserts. Runs expired by retention leave the index as pages pass over them.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from orchestrator import events
from orchestrator.models import Execution, ExecutionStatus
from orchestrator.runs import keys


async def tenant_flows(redis: Redis) -> dict[str, list[str]]:
    """Every tenant that created a run, with the flows it has runs of: enough to name every index."""
    out: dict[str, list[str]] = {}
    for raw in await redis.smembers(keys.TENANTS):
        tenant = raw.decode()
        out[tenant] = sorted(f.decode() for f in await redis.smembers(keys.tenant_flows(tenant)))
    return out


async def page(
    redis: Redis,
    *,
    tenant: str,
    limit: int,
    cursor: str | None = None,
    status: ExecutionStatus | None = None,
    flow_id: str | None = None,
    since: str | None = None,
) -> tuple[list[Execution[Any]], str | None]:
    """Return one newest-first page and the cursor of the next, reading O(limit) keys.

    `since` (an id, e.g. ``webhooks.ids.id_floor``) stops the page at runs created before it.
    """
    index = keys.index(tenant, flow_id=flow_id, status=status)
    found: list[Execution[Any]] = []
    upper = "+" if cursor is None else f"({cursor}"
    lower = "-" if since is None else f"[{since}"
    while len(found) <= limit:
        want = limit + 1 - len(found)
        ids = await redis.zrevrangebylex(index, upper, lower, start=0, num=want)
        if not ids:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hget(keys.run(rid.decode()), "status")
                pipe.lindex(keys.run_events(rid.decode()), -1)  # the current snapshot is its data
            rows = await pipe.execute()
        gone = []
        for rid, current, last in zip(ids, rows[::2], rows[1::2], strict=True):
            if current is None or last is None:
                gone.append(rid)  # expired by retention; the index entry goes with it
            elif status is None or current.decode() == status.value:
                found.append(Execution[Any].model_validate_json(events.snapshot(last)))
        if gone:
            await redis.zrem(index, *gone)
        upper = f"({ids[-1].decode()}"
        if len(ids) < want:
            break
    more = len(found) > limit
    found = found[:limit]
    return found, (found[-1].id if more and found else None)
