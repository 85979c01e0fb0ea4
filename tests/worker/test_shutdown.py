"""A rolling deploy loses no work: SIGTERM lets running attempts finish within the grace period,
hands back (re-queues at once, not counted as lost) what outlives it, and a second signal hands
back at once (issue 13, case 4: the run used to sit ~10 s until its lease lapsed, then use up an
attempt).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from orchestrator.dev.bench.stack import cpu_seconds
from tests.conftest import tenant_client
from tests.deadlines import wait_for
from tests.faults.stack import stack, wait_ready
from tests.report import report
from tests.worker.test_isolation import create, ended, executions, state

pytestmark = pytest.mark.timeout(120)
FLOWS = ("tests.flows", "tests.unpolite")


async def test_sigterm_lets_a_running_attempt_finish(tmp_path: Path) -> None:
    async with stack(tmp_path, flows=FLOWS, worker_shutdown_grace_seconds=25.0) as (procs, server):
        base = procs.api()
        worker = procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            run_id = await create(http, "slow-step", {"seconds": 4})
            await wait_for(lambda: executions(redis, run_id), timeout=10)
            os.kill(worker.pid, signal.SIGTERM)
            # Draining, the worker waits on its running attempt: it does not spin (review of
            # issue 15: the wake-up loop busy-looped through the drain, starving async flows).
            await asyncio.sleep(1.2)  # past the wake-up loop's blocking read (1 s), which then spun
            before = cpu_seconds(worker.pid)
            await asyncio.sleep(1.0)  # the window measured, not a synchronisation
            assert cpu_seconds(worker.pid) - before < 0.5
            done = await ended(http, run_id)
            assert done["status"] == "success" and done["attempt"] == 1
            assert done["metrics"]["stepsRun"] == 2
            await wait_for(lambda: worker.poll() is not None, timeout=10)
            assert worker.returncode == 0


@pytest.mark.parametrize("signals", [1, 2])
async def test_what_outlives_the_grace_is_handed_back_at_once_and_not_counted(
    tmp_path: Path, signals: int
) -> None:
    # A 30 s lease: waiting for it to lapse would blow the deadlines below. One attempt allowed:
    # a hand-back counted as lost would end the run failed/worker_lost.
    grace = 1.0 if signals == 1 else 60.0
    async with stack(
        tmp_path, flows=FLOWS, lease_seconds=30.0, max_attempts=1, worker_shutdown_grace_seconds=grace
    ) as (procs, server):
        base = procs.api()
        first = procs.start("worker")
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            run_id = await create(http, "slow-step", {"until_key": "release:deploy", "limit": 60})
            await wait_for(lambda: executions(redis, run_id), timeout=10)
            procs.start("worker")  # the new version of the deploy
            signalled = time.monotonic()
            os.kill(first.pid, signal.SIGTERM)
            if signals == 2:
                # Signals of one kind do not queue: send the second once the first was handled.
                await wait_for(lambda: "taking no new runs" in procs.log_tail("worker", 100_000), timeout=10)
                os.kill(first.pid, signal.SIGTERM)
            await wait_for(lambda: first.poll() is not None, timeout=20)
            handed = await state(http, run_id)
            assert handed["status"] == "running" and handed["attempt"] == 2, handed
            await wait_for(lambda: _attempts(redis, run_id, 2), timeout=10)
            restarted = time.monotonic() - signalled
            await redis.set("release:deploy", 1)
            done = await ended(http, run_id)
            assert done["status"] == "success" and done["attempt"] == 2, done
            assert done["output"] == {"attempt": 2}
            events = (await http.get(f"/v1/runs/{run_id}/events")).json()["data"]
            assert [e["type"] for e in events].count("execution.running") == 2
            report(
                f"deploy ({signals} signal{'s' if signals > 1 else ''})",
                grace_s=grace,
                restarted_elsewhere_after_s=round(restarted, 2),
                lease_s=30,
            )


async def _attempts(redis: Redis, run_id: str, n: int) -> bool:
    return len(await executions(redis, run_id)) >= n
