"""The cost of a run in CPU: every process's CPU from /proc, before and after a batch of no-op runs.

``cpu_ms_per_run`` is the server's CPU (API, workers, dispatchers, Redis) per no-op run whose three
transitions are delivered to one endpoint; ``cpu_ms_per_delivery`` the dispatchers' share per
delivery; the ``*_vs_1`` figures compare the same load on more processes (a per-run cost that
grows with the process count shows up there).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from orchestrator.dev.bench.measure import AUTH, Figures, until
from orchestrator.dev.bench.stack import TENANT, Receiver, Stack, cpu_seconds
from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks import EndpointStore


async def batch_runs(url: str, n: int, *, flow: str = "bench-noop", batch: int = 500) -> None:
    """Create `n` runs with batch calls (the API's cost per run, not per request)."""
    async with aiohttp.ClientSession(url, headers=AUTH) as http:
        for start in range(0, n, batch):
            items: list[dict[str, object]] = [{"input": {}} for _ in range(min(batch, n - start))]
            async with http.post(f"/v1/flows/{flow}/runs/batch", json={"items": items}) as resp:
                assert resp.status == 202, await resp.text()


async def cpu_per_run(n: int, *, workers: int = 1, dispatchers: int = 1) -> dict[str, float]:
    """CPU ms per run of each role (and all together), for `n` no-op runs delivered to one endpoint."""
    async with Stack(workers=workers, dispatchers=dispatchers) as stack:
        assert stack.redis is not None and stack.redis_server.proc is not None
        receiver = await Receiver(expect=3 * n).start()
        try:
            await EndpointStore(stack.redis).create(tenant=TENANT, url=receiver.url, events=[], flow_ids=[])
            pids = {name: proc.pid for name, proc in stack.children.procs.items()}
            pids["redis"] = stack.redis_server.proc.pid
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            await batch_runs(stack.url, n)
            done = keys.index(TENANT, status=ExecutionStatus.success)

            async def finished() -> bool:
                assert stack.redis is not None
                return bool(await stack.redis.zcard(done) >= n) and receiver.done.is_set()

            await until(finished, limit=600, every=0.05)
            seconds = time.perf_counter() - started
            await asyncio.sleep(0.5)  # the processes' last flushes after the last delivery
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        finally:
            await receiver.stop()
    by_role: dict[str, float] = {}
    for name, value in spent.items():
        role = name.rstrip("0123456789")
        by_role[role] = by_role.get(role, 0.0) + value
    out = {f"cpu_ms_per_run_{role}": value / n * 1000 for role, value in by_role.items()}
    out["cpu_ms_per_run"] = sum(by_role.values()) / n * 1000
    out["cpu_ms_per_delivery"] = by_role.get("dispatcher", 0.0) / (3 * n) * 1000
    out["runs_per_s_delivered"] = n / seconds
    return out


async def scenario_cpu(quick: bool, *, workers: int | None = None, dispatchers: int | None = None) -> Figures:
    """``cpu_ms_per_run``, ``cpu_ms_per_delivery`` and how they grow with 4 workers and 3 dispatchers.

    With `workers` and/or `dispatchers` (``orchestrator bench --workers N --dispatchers M``) it
    measures that shape instead, against one of each: ``cpu_ms_per_run_at_shape`` and
    ``cpu_per_run_at_shape_vs_1``.
    """
    n = 1000 if quick else 2000
    base = await cpu_per_run(n, workers=1, dispatchers=1)
    figures: Figures = dict(base)
    if workers or dispatchers:
        shape = await cpu_per_run(n, workers=workers or 1, dispatchers=dispatchers or 1)
        figures["cpu_ms_per_run_at_shape"] = shape["cpu_ms_per_run"]
        figures["cpu_per_run_at_shape_vs_1"] = shape["cpu_ms_per_run"] / max(base["cpu_ms_per_run"], 1e-9)
        for role in ("worker", "dispatcher"):
            figures[f"cpu_ms_per_run_{role}_at_shape"] = shape.get(f"cpu_ms_per_run_{role}", 0.0)
        return figures
    four = await cpu_per_run(n, workers=4, dispatchers=1)
    three = await cpu_per_run(n, workers=1, dispatchers=3)
    figures["cpu_per_run_4_workers_vs_1"] = four["cpu_ms_per_run_worker"] / max(
        base["cpu_ms_per_run_worker"], 1e-9
    )
    figures["cpu_per_run_3_dispatchers_vs_1"] = three["cpu_ms_per_run_dispatcher"] / max(
        base["cpu_ms_per_run_dispatcher"], 1e-9
    )
    figures["cpu_ms_per_run_4_workers"] = four["cpu_ms_per_run"]
    figures["cpu_ms_per_run_3_dispatchers"] = three["cpu_ms_per_run"]
    return figures
