"""The benchmark scenarios; each returns named figures (the keys of ``orchestrator bench --json``)."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from orchestrator.dev.bench.stack import KEY, TENANT, Receiver, Stack
from orchestrator.dev.children import Children
from orchestrator.dev.embedded import EmbeddedRedis, free_port
from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks import OUTBOX_STREAM, EndpointStore, OutboxEntry, headers_for
from webhooks.ids import new_id

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


async def e2e(n: int, *, webhook: bool) -> float:
    """Runs/s from HTTP create to success of no-op runs (with one endpoint receiving all transitions)."""
    async with Stack(workers=1, dispatchers=1 if webhook else 0) as stack:
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


def _bodies(n: int) -> list[str]:
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
            bodies = _bodies(n // endpoints)
            started = time.perf_counter()
            for start in range(0, len(bodies), 500):
                async with stack.redis.pipeline(transaction=False) as pipe:
                    for body in bodies[start : start + 500]:
                        entry = OutboxEntry(
                            id=new_id("msg"),
                            type="execution.success",
                            tenant=TENANT,
                            subject="exec_1",
                            flow="bench-noop",
                            body=body,
                        )
                        pipe.execute_command("XADD", OUTBOX_STREAM, "*", *entry.to_fields())
                    await pipe.execute()
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
                [(r.url, s) for r, s in zip(receivers, secrets, strict=True)], bodies, concurrency
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
                for body in _bodies(per):
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
        small, large = (10_000, 100_000)
        latency: dict[int, tuple[float, float]] = {}
        from orchestrator.runs.store import NewRun, RunStore

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
        "get_latency_ratio_100k_vs_10k": latency[large][0] / latency[small][0],
        "list_latency_ratio_100k_vs_10k": latency[large][1] / latency[small][1],
    }


SCENARIOS: dict[str, Callable[[bool], Awaitable[Figures]]] = {
    "e2e": scenario_e2e,
    "deliveries": scenario_deliveries,
    "latency": scenario_latency,
    "get": scenario_get,
    "isolation": scenario_isolation,
    "storage": scenario_storage,
}


def summarize(samples: list[Figures]) -> dict[str, dict[str, float]]:
    """Median and spread (min, max) of each figure over repeats."""
    out: dict[str, dict[str, float]] = {}
    for key in samples[0]:
        values = [s[key] for s in samples if key in s]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out
