"""One clock (DESIGN.md): processes whose host clock is 30 s off (libfaketime) agree on every deadline.

A skewed worker neither reaps healthy attempts nor stalls, and labels its runs with Redis's time
(issue 13, case 3: a clock 30 s ahead used to reap other workers' attempts, running a 6 s flow 2-3
times). A skewed dispatcher neither takes deliveries another one has claimed (duplicates) nor sends
a retry before its delay.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.conftest import ROOT, subprocess_env, tenant_client
from tests.deadlines import wait_for
from tests.faults.stack import Stack, stack, wait_ready
from tests.receiver import Receiver
from tests.worker.test_isolation import create, ended, executions

pytestmark = pytest.mark.timeout(120)
FLOWS = ("tests.flows", "tests.unpolite")
# Debian's libfaketime (`make test` installs it, .ci/system-deps); the folder names the architecture.
FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), Path("libfaketime.so.1"))


def skewed(procs: Stack, role: str, offset: str) -> subprocess.Popen[bytes]:
    """Start `role` with its wall clock `offset` (e.g. "+30s") off; its monotonic clock is true."""
    if not FAKETIME.exists():
        pytest.fail(f"{FAKETIME} is missing: `make test` installs Debian's libfaketime (as root)")
    env = subprocess_env(procs.settings) | {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": offset,
        "DONT_FAKE_MONOTONIC": "1",
    }
    log = procs.logs / f"{role}-skewed-{len(procs.procs)}.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", role],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    procs.procs.append((role, proc))
    procs.log_of[proc.pid] = log
    return proc


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() * 1000


@pytest.mark.parametrize("offset", ["+30s", "-30s"])
async def test_a_worker_with_a_skewed_clock_runs_every_attempt_once(tmp_path: Path, offset: str) -> None:
    async with stack(tmp_path, flows=FLOWS, lease_seconds=2.0, heartbeat_seconds=0.3, sweep_seconds=0.2) as (
        procs,
        server,
    ):
        base = procs.api()
        procs.start("worker")
        skewed(procs, "worker", offset)
        redis = Redis.from_url(server.url)
        async with redis, tenant_client(base) as http:
            await wait_ready(http)
            ids = [await create(http, "slow-step", {"seconds": 3}) for _ in range(8)]
            for run_id in ids:
                done = await ended(http, run_id, timeout=60)
                assert done["status"] == "success" and done["attempt"] == 1, done
                assert len(await executions(redis, run_id)) == 1, run_id
                # labels come from Redis's clock: never started before created, a true duration
                assert _ms(done["startedAt"]) >= _ms(done["createdAt"]) - 50, done
                assert 2_500 <= done["duration"] < 10_000, done
            pids = {(await executions(redis, r))[0].split(":")[0] for r in ids}
            assert len(pids) == 2, "both workers took runs"


@pytest.mark.parametrize("offset", ["+30s", "-30s"])
async def test_a_dispatcher_with_a_skewed_clock_keeps_claims_and_retry_delays(
    tmp_path: Path, offset: str
) -> None:
    first_seen: dict[str, float] = {}

    async def slow_then_fail_once(request: web.Request) -> web.StreamResponse:
        # Every message: the first attempt waits 0.5 s (so claims are held while the other
        # dispatcher looks) and fails; the retry succeeds.
        msg = request.headers["webhook-id"]
        if msg in first_seen:
            return web.Response(status=200)
        first_seen[msg] = time.monotonic()
        await asyncio.sleep(0.5)
        return web.Response(status=503)

    receiver = await Receiver(default=slow_then_fail_once).start()
    try:
        async with stack(tmp_path, flows=FLOWS, webhook_retry_schedule=(1.0, 1.0), webhook_timeout=5.0) as (
            procs,
            _server,
        ):
            base = procs.api()
            procs.start("worker")
            procs.start("dispatcher")
            skewed(procs, "dispatcher", offset)
            async with tenant_client(base) as http:
                await wait_ready(http)
                resp = await http.post(
                    "/v1/webhooks", json={"url": receiver.url, "events": ["execution.success"]}
                )
                assert resp.status_code == 201
                ids = [await create(http, "noop-async", {"i": i}) for i in range(30)]
                for run_id in ids:
                    assert (await ended(http, run_id))["status"] == "success"
                await wait_for(lambda: len(receiver.requests) >= 60, timeout=60)
            by_message: dict[str, list[float]] = {}
            for r in receiver.requests:
                by_message.setdefault(r.id, []).append(r.at)
            assert len(by_message) == 30
            # two attempts each (fail, then succeed), never a third: nobody took a claimed delivery
            assert sorted(len(v) for v in by_message.values()) == [2] * 30
            # the retry came after its delay (1 s -20 % jitter) counted from the failed answer
            gaps = [times[1] - (times[0] + 0.5) for times in by_message.values()]
            assert min(gaps) >= 0.75, sorted(gaps)[:3]
    finally:
        await receiver.stop()
