"""Cost scenarios: Redis bytes per run and list latency at size, and each isolation mode's cost per run."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from orchestrator.dev.bench.measure import AUTH, Figures, create_runs, pct, until
from orchestrator.dev.bench.stack import KEY, TENANT, Receiver, Stack, cpu_seconds
from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks import OUTBOX_STREAM, EndpointStore


async def scenario_storage(quick: bool) -> Figures:
    """``redis_bytes_per_run`` and ``get_latency_ratio_100k_vs_10k``."""
    n = 2000 if quick else 10000
    async with Stack(workers=1, dispatchers=1) as stack:
        assert stack.redis is not None
        await stack.redis.execute_command("MEMORY", "PURGE")
        before = int((await stack.redis.info("memory"))["used_memory"])
        await create_runs(stack.url, n)
        done = keys.index(TENANT, status=ExecutionStatus.success)

        async def settled() -> bool:
            assert stack.redis is not None
            return bool(await stack.redis.zcard(done) >= n and await stack.redis.xlen(OUTBOX_STREAM) == 0)

        await until(settled, limit=180, every=0.05)
        after = int((await stack.redis.info("memory"))["used_memory"])
        per_run = (after - before) / n
        with_webhooks = await _bytes_with_webhooks(stack, n)
        small, large = (10_000, 100_000)
        latency: dict[int, tuple[float, float]] = {}
        from orchestrator.runs.store import RunStore
        from orchestrator.runs.stored import NewRun

        store = RunStore(
            stack.redis,
            queue_name="bench:unused",
            retention_seconds=3600,
            lease_seconds=10,
            requeue_after_seconds=3600,
        )
        made = n
        async with aiohttp.ClientSession(stack.url, headers=AUTH) as http:
            for size in (small, large):
                while made < size:
                    batch = min(1000, size - made)
                    await store.create_many(
                        tenant=TENANT,
                        flow_id="bench-stored",
                        items=[NewRun(input_json="{}") for _ in range(batch)],
                    )
                    made += batch
                ids = [i.decode() for i in await stack.redis.zrange(keys.index(TENANT), 0, 199)]
                started = time.perf_counter()
                for rid in ids:
                    async with http.get(f"/v1/runs/{rid}") as resp:
                        await resp.read()
                get_ms = (time.perf_counter() - started) / len(ids)
                started = time.perf_counter()
                cursor = None
                for _ in range(50):
                    params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                    async with http.get("/v1/runs", params=params) as resp:
                        cursor = (await resp.json())["nextCursor"]
                list_ms = (time.perf_counter() - started) / 50
                latency[size] = (get_ms, list_ms)
    return {
        "redis_bytes_per_run": per_run,
        "redis_bytes_per_run_with_webhooks": with_webhooks,
        "get_latency_ratio_100k_vs_10k": latency[large][0] / latency[small][0],
        "list_latency_ratio_100k_vs_10k": latency[large][1] / latency[small][1],
    }


async def _bytes_with_webhooks(stack: Stack, n: int) -> float:
    """Redis's used_memory per no-op run whose 3 transitions were delivered to one endpoint: the
    run, its event log, its messages, deliveries and attempts, listings (before any expiry)."""
    assert stack.redis is not None
    redis = stack.redis
    receiver = await Receiver(expect=3 * n).start()
    try:
        await EndpointStore(redis).create(tenant=TENANT, url=receiver.url, events=[], flow_ids=[])
        await redis.execute_command("MEMORY", "PURGE")
        before = int((await redis.info("memory"))["used_memory"])
        await create_runs(stack.url, n)

        async def delivered() -> bool:
            return receiver.done.is_set() and await redis.xlen(OUTBOX_STREAM) == 0

        await until(delivered, limit=300, every=0.05)
        await asyncio.sleep(0.5)  # the last attempts' records
        return (int((await redis.info("memory"))["used_memory"]) - before) / n
    finally:
        await receiver.stop()


async def scenario_modes(quick: bool) -> Figures:
    """Per isolation mode: median create-to-end ms of one no-op run at a time, and worker CPU per run."""
    n = 60 if quick else 300
    out: Figures = {}
    async with Stack(workers=1, worker_processes=1) as stack:
        worker_pid = stack.children.procs["worker0"].pid
        from orchestrator.client import AsyncClient

        async with AsyncClient(stack.url, api_key=KEY) as client:
            for mode in ("async", "thread", "process"):
                flow_id = "bench-noop" if mode == "async" else f"bench-noop-{mode}"
                for _ in range(5):  # warm up (the process pool's child imports the flows once)
                    await client.runs.wait_for_completion(
                        (await client.flows.run(flow_id, {})).id, timeout=60
                    )
                spent: list[float] = []
                cpu_before = cpu_seconds(worker_pid)
                for _ in range(n):
                    began = time.perf_counter()
                    ex = await client.flows.run(flow_id, {})
                    await client.runs.wait_for_completion(ex.id, timeout=60)
                    spent.append(time.perf_counter() - began)
                out[f"noop_run_ms_{mode}"] = pct(spent, 50) * 1000
                out[f"worker_cpu_ms_per_run_{mode}"] = (cpu_seconds(worker_pid) - cpu_before) / n * 1000
    out["process_overhead_ms_per_run"] = out["noop_run_ms_process"] - out["noop_run_ms_async"]
    return out
