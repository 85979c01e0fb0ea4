"""Latency scenarios: notify, wait and start latency, GET against a trivial app, endpoint isolation."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import aiohttp
from aiohttp import web

from orchestrator.dev.bench.measure import AUTH, Figures, bodies, create_runs, ms, pct, until
from orchestrator.dev.bench.stack import KEY, TENANT, Receiver, Stack
from orchestrator.dev.children import Children
from orchestrator.dev.embedded import free_port
from webhooks import OUTBOX_STREAM, EndpointStore, OutboxEntry
from webhooks.ids import new_id


async def scenario_latency(quick: bool) -> Figures:
    """``notify_*``, ``wait_*`` (and the 1 s polling baseline) and ``create_to_running_p50_ms``."""
    n = 40 if quick else 200
    async with Stack(workers=1, dispatchers=1) as stack:
        assert stack.redis is not None
        receiver = await Receiver().start()
        try:
            await EndpointStore(stack.redis).create(tenant=TENANT, url=receiver.url, events=[], flow_ids=[])
            from orchestrator.client import AsyncClient

            async with AsyncClient(stack.url, api_key=KEY) as client:
                waits: list[float] = []
                polls: list[float] = []
                starts: list[float] = []
                # Light load: one no-op run at a time; every transition is a webhook.
                ids = []
                for _ in range(n):
                    ids.append((await client.flows.run("bench-noop", {})).id)
                    await asyncio.sleep(0.02)
                for run_id in ids:
                    done = await client.runs.wait_for_completion(run_id, timeout=60)
                    starts.append((done.started_at - done.created_at).total_seconds())  # type: ignore[operator]
                await until(lambda: _arrived(receiver, 3 * n), limit=60)
                notify = [at - ms(json.loads(body)["timestamp"]) for at, body in receiver.arrivals]

                async def pushed() -> None:
                    ex = await client.flows.run("bench-sleep", {"seconds": random.uniform(0.05, 1.0)})
                    done = await client.runs.wait_for_completion(ex.id, timeout=60)
                    waits.append(time.time() - done.completed_at.timestamp())  # type: ignore[union-attr]

                async def polled() -> None:
                    ex = await client.flows.run("bench-sleep", {"seconds": random.uniform(0.05, 1.0)})
                    while True:  # the seed's loop: get, then sleep 1 s
                        got = await client.runs.get(ex.id)
                        if got.status.terminal:
                            polls.append(time.time() - got.completed_at.timestamp())  # type: ignore[union-attr]
                            return
                        await asyncio.sleep(1.0)

                for _ in range(max(1, n // 10)):  # 5 waiting and 5 polling clients at a time
                    await asyncio.gather(*(pushed() for _ in range(5)), *(polled() for _ in range(5)))
        finally:
            await receiver.stop()
    return {
        "notify_p50_ms": pct(notify, 50) * 1000,
        "notify_p99_ms": pct(notify, 99) * 1000,
        "wait_p50_ms": pct(waits, 50) * 1000,
        "wait_p99_ms": pct(waits, 99) * 1000,
        "poll_1s_p50_ms": pct(polls, 50) * 1000,
        "poll_1s_p99_ms": pct(polls, 99) * 1000,
        "wait_vs_poll_p50": pct(polls, 50) / max(pct(waits, 50), 1e-6),
        "create_to_running_p50_ms": pct(starts, 50) * 1000,
    }


async def _arrived(receiver: Receiver, count: int) -> bool:
    return len(receiver.arrivals) >= count


async def load(
    url: str, path: str, seconds: float, concurrency: int = 32, headers: dict[str, str] | None = None
) -> float:
    """Requests/s of GET `path` with `concurrency` clients for `seconds`."""
    count = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(
        url, headers=headers or {}, connector=aiohttp.TCPConnector(limit=concurrency)
    ) as http:

        async def client() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with http.get(path) as resp:
                    await resp.read()
                    count += resp.status == 200

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def scenario_get(quick: bool) -> Figures:
    """``get_vs_trivial``: GET /v1/runs/{id} against a Starlette+Redis GET on the same stack."""
    seconds = 3.0 if quick else 10.0
    async with Stack(workers=0) as stack:
        [run_id] = await create_runs(stack.url, 1)
        ours = await load(stack.url, f"/v1/runs/{run_id}", seconds, headers=AUTH)
        port = free_port()
        trivial = Children()
        trivial.start(
            "trivial",
            [sys.executable, "-m", "orchestrator.dev.bench.trivial", str(port), stack.redis_server.url],
            env={**__import__("os").environ},
            quiet=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"

            async def up() -> bool:
                try:
                    async with aiohttp.ClientSession() as http, http.get(base + "/get") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(up, limit=30, every=0.05)
            raw = await load(base, "/get", seconds)
        finally:
            await asyncio.to_thread(trivial.stop)
    return {"get_per_s": ours, "trivial_get_per_s": raw, "get_vs_trivial": ours / raw}


async def scenario_isolation(quick: bool) -> Figures:
    """``isolation_p99_ratio``: healthy endpoints' p99 beside a black hole, over the all-healthy p99."""
    per = 50 if quick else 300

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        return web.Response(status=204)

    async def p99(black_hole: bool) -> float:
        async with Stack(api=0, workers=0, dispatchers=1) as stack:
            assert stack.redis is not None
            healthy = [await Receiver(expect=per).start() for _ in range(9)]
            hole = await Receiver(handler=hang if black_hole else None).start()
            try:
                store = EndpointStore(stack.redis)
                for r in [*healthy, hole]:
                    await store.create(tenant=TENANT, url=r.url, events=[], flow_ids=[])
                sent: dict[str, float] = {}
                for body in bodies(per):
                    sent[json.loads(body)["data"]["id"]] = time.time()
                    entry = OutboxEntry(
                        id=new_id("msg"),
                        type="execution.success",
                        tenant=TENANT,
                        subject="exec_1",
                        flow="f",
                        body=body,
                    )
                    await stack.redis.execute_command("XADD", OUTBOX_STREAM, "*", *entry.to_fields())
                    await asyncio.sleep(0.002)  # a steady trickle, not one burst
                await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in healthy)), 120)
                lags = [at - sent[json.loads(body)["data"]["id"]] for r in healthy for at, body in r.arrivals]
                return pct(lags, 99)
            finally:
                for r in [*healthy, hole]:
                    await r.stop()

    calm = await p99(black_hole=False)
    stormy = await p99(black_hole=True)
    return {
        "healthy_p99_ms": calm * 1000,
        "healthy_p99_beside_black_hole_ms": stormy * 1000,
        "isolation_p99_ratio": stormy / max(calm, 1e-6),
    }
