"""The ``ordering`` scenario: deliveries per second to an ordered endpoint (``ordering: "run"``) against
an unordered one, with 100 runs in flight; target ``ordered_vs_unordered`` >= 0.8 (issue 14).

Each run sends its messages one after the other when ordered (the next waits for the previous to be
delivered), so what keeps the rate up is that the runs go in parallel: no head-of-line blocking.
The receiver takes a few milliseconds per request, as a real one does.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from orchestrator.dev.bench.measure import Figures
from orchestrator.dev.bench.stack import TENANT, Receiver, Stack
from webhooks import OUTBOX_STREAM, EndpointStore, OutboxEntry
from webhooks.ids import new_id

RUNS = 100
RECEIVER_MS = 5.0


async def _answer(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(RECEIVER_MS / 1000)
    return web.Response(status=204)


async def rate(*, ordered: bool, per_run: int) -> tuple[float, bool]:
    """(deliveries/s to one endpoint with RUNS runs in flight, whether every run arrived in order)."""
    async with Stack(api=0, workers=0, dispatchers=1) as stack:
        assert stack.redis is not None
        receiver = await Receiver(handler=_answer, expect=RUNS * per_run).start()
        try:
            await EndpointStore(stack.redis).create(
                tenant=TENANT, url=receiver.url, events=[], flow_ids=[], ordering="run" if ordered else "none"
            )
            started = time.perf_counter()
            # As concurrent runs commit them: every run's first message, then every run's second...
            async with stack.redis.pipeline(transaction=False) as pipe:
                for seq in range(1, per_run + 1):
                    for run in range(RUNS):
                        data = {"id": f"exec_{run}", "sequence": seq, "status": "running"}
                        body = json.dumps(
                            {
                                "type": "execution.running",
                                "timestamp": "2026-11-29T00:00:00.000Z",
                                "data": data,
                            }
                        )
                        entry = OutboxEntry(
                            id=new_id("msg"),
                            type="execution.running",
                            tenant=TENANT,
                            subject=f"exec_{run}",
                            flow="bench-noop",
                            body=body,
                            sequence=seq,
                        )
                        pipe.execute_command("XADD", OUTBOX_STREAM, "*", *entry.to_fields())
                await pipe.execute()
            await asyncio.wait_for(receiver.done.wait(), 300)
            elapsed = time.perf_counter() - started
            seen: dict[str, list[int]] = {}
            for _, raw in receiver.arrivals:
                data = json.loads(raw)["data"]
                seen.setdefault(data["id"], []).append(data["sequence"])
            in_order = all(s == sorted(s) for s in seen.values())
            return RUNS * per_run / elapsed, in_order
        finally:
            await receiver.stop()


async def scenario_ordering(quick: bool) -> Figures:
    """``ordered_vs_unordered``: the ordered endpoint's delivery rate over the unordered one's."""
    per_run = 5 if quick else 20
    unordered, _ = await rate(ordered=False, per_run=per_run)
    ordered, in_order = await rate(ordered=True, per_run=per_run)
    if not in_order:
        raise RuntimeError("an ordered run's messages arrived out of order")
    return {
        "unordered_deliveries_per_s": unordered,
        "ordered_deliveries_per_s": ordered,
        "ordered_vs_unordered": ordered / unordered,
    }
