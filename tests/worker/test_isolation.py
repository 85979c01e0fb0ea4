"""Flows that are not polite, on real worker processes: blocking, CPU-bound, deaf to cancellation, greedy.

Each case of issue 13's "tried as a new user would": a run is executed once while its worker lives,
its timeout and cancel are hard in every isolation, and a stuck flow never stalls the others.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import tenant_client
from tests.deadlines import wait_for
from tests.faults.stack import stack, wait_ready
from tests.report import report

pytestmark = pytest.mark.timeout(120)
FLOWS = ("tests.flows", "tests.unpolite")


async def create(http: httpx.AsyncClient, flow: str, data: dict[str, Any]) -> str:
    resp = await http.post(f"/v1/flows/{flow}/runs", json={"input": data})
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["id"]
    return run_id


async def state(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    resp = await http.get(f"/v1/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


async def ended(http: httpx.AsyncClient, run_id: str, timeout: float = 30) -> dict[str, Any]:
    async def terminal() -> dict[str, Any] | None:
        doc = await state(http, run_id)
        return doc if doc["status"] in ("success", "failed", "cancelled") else None

    found: dict[str, Any] = await wait_for(terminal, timeout=timeout)
    return found


async def executions(redis: Redis, run_id: str) -> list[str]:
    """`pid:attempt` of every execution of the run's flow (tests/unpolite.py counts them)."""
    return [p.decode() for p in await redis.lrange(f"unpolite:pids:{run_id}", 0, -1)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_a_blocking_async_flow_ends_timeout_once_and_its_worker_is_never_taken_for_dead(
    tmp_path: Path,
) -> None:
    # Two workers and a 1 s lease: the blocked worker's loop cannot beat for 4 s, so without
    # heartbeats from outside the loop the other worker would reap and re-run the attempt.
    async with stack(tmp_path, flows=FLOWS, lease_seconds=1.0, heartbeat_seconds=0.2, sweep_seconds=0.2) as (
        procs,
        server,
    ):
        base = procs.api()
        procs.start("worker")
        procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            began = time.monotonic()
            run_id = await create(http, "blocking-async", {"seconds": 4})
            done = await ended(http, run_id)
            took = time.monotonic() - began
            assert done["status"] == "failed" and done["error"]["code"] == "timeout", done
            assert done["attempt"] == 1
            # the blocked call returns after 4 s; nobody may have started the run again meanwhile
            await wait_for(lambda: "could not end success" in procs.log_tail("worker", 100_000), timeout=10)
            assert len(await executions(redis, run_id)) == 1
            logs = procs.log_tail("worker", 100_000)
            assert "event loop has been blocked" in logs and "blocking-async" in logs
            assert "unpolite.py" in logs  # where it is blocked
            report("blocking async flow", timeout_s=2, ended_after_s=round(took, 2), executions=1)


async def test_a_blocking_def_flow_runs_in_a_thread_and_never_holds_up_the_worker(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=FLOWS) as (procs, server):
        base = procs.api()
        procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            held = await create(http, "gate-def", {"until_key": "release:gate", "limit": 60})
            await wait_for(lambda: executions(redis, held), timeout=10)
            other = await create(http, "noop-async", {"n": 1})
            # the other run on the same worker completes while the first still blocks its thread
            assert (await ended(http, other, timeout=10))["status"] == "success"
            assert (await state(http, held))["status"] == "running"
            await redis.set("release:gate", 1)
            assert (await ended(http, held))["status"] == "success"


async def test_a_blocking_def_flow_ends_timeout_on_time_and_its_thread_is_counted(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=FLOWS) as (procs, server):
        base = procs.api()
        procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            run_id = await create(http, "blocking-def", {"until_key": "release:never", "limit": 60})
            done = await ended(http, run_id)
            assert done["status"] == "failed" and done["error"]["code"] == "timeout"
            assert done["duration"] < 10_000  # the 60 s hold did not decide the outcome
            await wait_for(lambda: metric(http, 'orch_abandoned_total{isolation="thread"}'), timeout=10)
            assert len(await executions(redis, run_id)) == 1
            await redis.set("release:never", 1)


async def test_a_cpu_bound_process_flow_is_killed_at_its_deadline_while_others_go_on(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=FLOWS, worker_processes=2) as (procs, server):
        base = procs.api()
        procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            burner = await create(http, "burn-process", {"seconds": 60})
            await wait_for(lambda: executions(redis, burner), timeout=30)
            other = await create(http, "noop-async", {"n": 2})
            assert (await ended(http, other, timeout=10))["status"] == "success"
            assert (await state(http, burner))["status"] == "running"
            done = await ended(http, burner)
            gone_at = time.monotonic()
            assert done["status"] == "failed" and done["error"]["code"] == "timeout"
            pid = int((await executions(redis, burner))[0].split(":")[0])
            assert done["output"] == {"pid": pid}  # the partial output the child saved
            await wait_for(lambda: not alive(pid), timeout=5)
            report("process timeout", child_gone_after_end_s=round(time.monotonic() - gone_at, 2))


async def _cancel_deaf(http: httpx.AsyncClient, redis: Redis, flow: str) -> tuple[str, dict[str, Any]]:
    run_id = await create(http, flow, {"until_key": f"release:{flow}", "limit": 60})
    await wait_for(lambda: executions(redis, run_id), timeout=30)
    resp = await http.post(f"/v1/runs/{run_id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    return run_id, resp.json()


async def test_flows_deaf_to_cancellation_are_stopped_in_every_isolation(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=FLOWS, worker_processes=1) as (procs, server):
        base = procs.api()
        procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            for flow, isolation in (("deaf-async", "async"), ("deaf-thread", "thread")):
                await _cancel_deaf(http, redis, flow)
                name = f'orch_abandoned_total{{isolation="{isolation}"}}'
                await wait_for(lambda name=name: metric(http, name), timeout=10)
                # the worker goes on serving other runs
                other = await create(http, "noop-async", {"after": flow})
                assert (await ended(http, other, timeout=10))["status"] == "success"
            run_id, _ = await _cancel_deaf(http, redis, "deaf-process")
            pid = int((await executions(redis, run_id))[0].split(":")[0])
            await wait_for(lambda: not alive(pid), timeout=5)  # SIGTERM ignored: SIGKILL ended it
            for flow in ("deaf-async", "deaf-thread", "deaf-process"):
                await redis.set(f"release:{flow}", 1)
            # a run on the replacement child works
            run_id = await create(http, "burn-process", {"seconds": 0})
            assert (await ended(http, run_id))["status"] == "success"


async def test_a_process_flow_past_its_memory_limit_ends_out_of_memory(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=FLOWS, worker_processes=1) as (procs, server):
        base = procs.api()
        procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            run_id = await create(http, "grow-process", {"mb": 400})
            done = await ended(http, run_id)
            assert done["status"] == "failed" and done["error"]["code"] == "out_of_memory", done
            assert done["error"]["details"]["maxMemoryMb"] == 150
            pid = int((await executions(redis, run_id))[0].split(":")[0])
            await wait_for(lambda: not alive(pid), timeout=5)
            assert len(await executions(redis, run_id)) == 1
