"""Throughput scenarios: runs per second against raw arq, deliveries per second against raw aiohttp."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp

from orchestrator.dev.bench.measure import Figures, append_outbox, bodies, create_runs, until
from orchestrator.dev.bench.stack import TENANT, Receiver, Stack
from orchestrator.dev.embedded import EmbeddedRedis
from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks import EndpointStore, headers_for
from webhooks.ids import new_id


async def raw_arq(n: int, *, max_jobs: int, poll_delay: float) -> float:
    """Jobs/s of a raw arq worker draining no-op jobs (its own process and Redis)."""
    with EmbeddedRedis() as redis:
        out = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "orchestrator.dev.bench.rawarq",
                redis.url,
                str(n),
                str(max_jobs),
                str(poll_delay),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    return float(out.stdout.strip().splitlines()[-1])


async def e2e(n: int, *, webhook: bool, **stack_options: Any) -> float:
    """Runs/s from HTTP create to success of no-op runs (with one endpoint receiving all transitions)."""
    async with Stack(workers=1, dispatchers=1 if webhook else 0, **stack_options) as stack:
        assert stack.redis is not None
        receiver = await Receiver(expect=3 * n).start()
        try:
            if webhook:
                await EndpointStore(stack.redis).create(
                    tenant=TENANT, url=receiver.url, events=[], flow_ids=[]
                )
            done_key = keys.index(TENANT, status=ExecutionStatus.success)
            started = time.perf_counter()
            await create_runs(stack.url, n)

            async def finished() -> bool:
                assert stack.redis is not None
                return bool(await stack.redis.zcard(done_key) >= n) and (
                    not webhook or receiver.done.is_set()
                )

            await until(finished)
            return n / (time.perf_counter() - started)
        finally:
            await receiver.stop()


async def scenario_e2e(quick: bool) -> Figures:
    """``e2e_vs_arq`` and ``e2e_webhook_vs_arq``."""
    n = 1000 if quick else 5000
    from orchestrator.settings import Settings

    tuning = Settings()
    raw = await raw_arq(n, max_jobs=tuning.worker_max_jobs, poll_delay=tuning.worker_poll_delay)
    plain = await e2e(n, webhook=False)
    hooked = await e2e(n, webhook=True)
    return {
        "raw_arq_jobs_per_s": raw,
        "e2e_runs_per_s": plain,
        "e2e_vs_arq": plain / raw,
        "e2e_webhook_runs_per_s": hooked,
        "e2e_webhook_vs_arq": hooked / raw,
    }


async def deliveries(n: int, endpoints: int) -> tuple[float, float]:
    """(dispatcher deliveries/s, raw aiohttp POSTs/s) to `endpoints` local receivers."""
    async with Stack(api=0, workers=0, dispatchers=1) as stack:
        assert stack.redis is not None and stack.settings is not None
        receivers = [await Receiver(expect=n // endpoints).start() for _ in range(endpoints)]
        try:
            store = EndpointStore(stack.redis)
            secrets = []
            for r in receivers:
                secrets.append((await store.create(tenant=TENANT, url=r.url, events=[], flow_ids=[])).secret)
            payloads = bodies(n // endpoints)
            started = time.perf_counter()
            await append_outbox(stack.redis, payloads, flow="bench-noop")
            await asyncio.wait_for(asyncio.gather(*(r.done.wait() for r in receivers)), 300)
            ours = n / (time.perf_counter() - started)
            for r in receivers:
                r.arrivals.clear()
                r.done.clear()
            concurrency = min(
                stack.settings.webhook_endpoint_concurrency * endpoints, stack.settings.webhook_max_in_flight
            )
            started = time.perf_counter()
            await raw_posts(
                [(r.url, s) for r, s in zip(receivers, secrets, strict=True)], payloads, concurrency
            )
            raw = n / (time.perf_counter() - started)
            return ours, raw
        finally:
            for r in receivers:
                await r.stop()


async def raw_posts(targets: list[tuple[str, str]], bodies: list[str], concurrency: int) -> None:
    """The baseline: one aiohttp session POSTing the same signed bodies to every target."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one(url: str, secret: str, body: str) -> None:
            headers = headers_for([secret], new_id("msg"), int(time.time()), body)
            headers["content-type"] = "application/json"
            async with (
                gate,
                http.post(url, data=body.encode(), headers=headers, allow_redirects=False) as resp,
            ):
                await resp.content.read(1024)

        await asyncio.gather(*(one(url, secret, b) for url, secret in targets for b in bodies))


async def scenario_deliveries(quick: bool) -> Figures:
    """``deliveries_vs_aiohttp`` with 1 and 10 receivers."""
    n = 2000 if quick else 10000
    one, raw_one = await deliveries(n, 1)
    ten, raw_ten = await deliveries(n, 10)
    return {
        "deliveries_per_s_1": one,
        "raw_aiohttp_per_s_1": raw_one,
        "deliveries_vs_aiohttp_1": one / raw_one,
        "deliveries_per_s_10": ten,
        "raw_aiohttp_per_s_10": raw_ten,
        "deliveries_vs_aiohttp_10": ten / raw_ten,
        "deliveries_vs_aiohttp": min(one / raw_one, ten / raw_ten),
    }
