"""What every scenario uses: figures, percentiles, waiting with a limit, creating runs, summaries."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp

from orchestrator.dev.bench.stack import KEY, TENANT

Figures = dict[str, float]
AUTH = {"Authorization": f"Bearer {KEY}"}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(timestamp: str) -> float:
    """Unix seconds of an API timestamp."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


async def until(condition: Callable[[], Awaitable[bool]], limit: float = 120.0, every: float = 0.005) -> None:
    """Wait for `condition` (a bench never waits forever)."""
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        await asyncio.sleep(every)


async def create_runs(
    url: str, n: int, *, flow: str = "bench-noop", data: Any = None, concurrency: int = 64
) -> list[str]:
    """Create `n` runs over HTTP with `concurrency` requests in flight; return their ids."""
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(
        url, headers=AUTH, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as http:

        async def one() -> None:
            async with gate, http.post(f"/v1/flows/{flow}/runs", json={"input": data or {}}) as resp:
                assert resp.status == 202, await resp.text()
                ids.append((await resp.json())["id"])

        await asyncio.gather(*(one() for _ in range(n)))
    return ids


def summarize(samples: list[Figures]) -> dict[str, dict[str, float]]:
    """Median and spread (min, max) of each figure over repeats."""
    out: dict[str, dict[str, float]] = {}
    for key in samples[0]:
        values = [s[key] for s in samples if key in s]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


async def append_outbox(redis: Any, payloads: list[str], *, flow: str) -> None:
    """Append one ``execution.success`` outbox entry per body, as transitions would, 500 a round trip."""
    from webhooks.ids import new_id
    from webhooks.outbox import OUTBOX_STREAM, OutboxEntry

    for start in range(0, len(payloads), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for body in payloads[start : start + 500]:
                entry = OutboxEntry(
                    id=new_id("msg"),
                    type="execution.success",
                    tenant=TENANT,
                    subject="exec_1",
                    flow=flow,
                    body=body,
                )
                pipe.execute_command("XADD", OUTBOX_STREAM, "*", *entry.to_fields())
            await pipe.execute()


def bodies(n: int) -> list[str]:
    """`n` message bodies like an execution.success webhook's."""
    return [
        json.dumps(
            {
                "type": "execution.success",
                "timestamp": "2026-11-29T00:00:00.000Z",
                "data": {"id": f"exec_{i}", "status": "success", "output": {"pages": 3}},
            }
        )
        for i in range(n)
    ]
