"""Redis crashes (SIGKILL) under load and comes back from its append-only file (appendfsync always):
503 `unavailable` meanwhile, every process reconnects without a restart, and no committed
transition or delivery is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from orchestrator.dev.embedded import EmbeddedRedis
from tests.conftest import tenant_client, wait_for
from tests.faults.stack import event_log, runs_of, stack, wait_ready
from tests.receiver import Receiver
from tests.report import report

pytestmark = pytest.mark.timeout(240)
RUNS = 80


async def test_processes_ride_out_a_redis_crash(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "aof", appendfsync="always")
    receiver = await Receiver().start()
    try:
        async with stack(tmp_path, redis=server) as (procs, _):
            base = procs.api()
            procs.start("worker")
            procs.start("dispatcher")
            async with tenant_client(base) as http:
                await wait_ready(http)
                assert (await http.post("/v1/webhooks", json={"url": receiver.url})).status_code == 201
                ids: list[str] = []
                refused = 0

                async def load() -> None:
                    # A careful client: each create has an Idempotency-Key and is retried until 202.
                    nonlocal refused
                    for i in range(RUNS):
                        while True:
                            try:
                                resp = await http.post(
                                    "/v1/flows/echo/runs",
                                    json={"input": {"text": str(i)}},
                                    headers={"Idempotency-Key": f"run-{i}"},
                                )
                            except httpx.HTTPError:
                                resp = None
                            if resp is not None and resp.status_code == 202:
                                ids.append(resp.json()["id"])
                                break
                            if resp is not None:
                                assert resp.status_code == 503, resp.text
                                assert resp.json()["error"]["code"] == "unavailable"
                            refused += 1
                            await asyncio.sleep(0.05)  # a client's back-off, not a sync point

                loading = asyncio.create_task(load())
                await wait_for(lambda: len(ids) >= RUNS // 4 and len(receiver.requests) >= 10, timeout=30)
                assert server.proc is not None
                os.kill(server.proc.pid, signal.SIGKILL)  # a crash: no chance to flush anything more
                server.proc.wait()
                down = time.time()
                await wait_for(lambda: refused >= 40, timeout=30)  # about 2 s of the load hitting the outage
                resp = await http.get(f"/v1/runs/{ids[0]}")
                assert resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable"
                server.stop()
                server.start()  # same port, same data: the AOF is replayed
                outage = time.time() - down
                await wait_ready(http)
                ready_after = time.time() - down - outage
                await loading
                assert len(set(ids)) == RUNS

                async def all_done() -> bool:
                    states = await runs_of(http, ids)
                    return all(states.get(i, {}).get("status") == "success" for i in ids)

                try:
                    await wait_for(all_done, timeout=60, interval=0.2)
                except AssertionError:
                    stuck = {
                        i: s["status"]
                        for i, s in (await runs_of(http, ids)).items()
                        if s["status"] != "success"
                    }
                    raise AssertionError(f"not done: {stuck}\n{procs.log_tail('worker')}") from None
                expected = set()
                retried = 0
                for run_id in ids:
                    log = await event_log(http, run_id)  # gap-free, from before the crash to after it
                    status = [e for e in log if e["type"] != "execution.progress"]
                    assert (
                        status[0]["type"] == "execution.queued" and status[-1]["type"] == "execution.success"
                    )
                    # an outage longer than the lease can cost an attempt (its heartbeat could not
                    # reach Redis): then it is re-run as the next attempt, each attempt starting once
                    starts = [e["data"]["attempt"] for e in status[1:-1]]
                    assert starts == list(range(1, len(starts) + 1)) and len(starts) <= 3, status
                    retried += len(starts) > 1
                    expected |= {e["id"] for e in log if e["type"] != "execution.progress"}

                await wait_for(lambda: set(receiver.ids()) >= expected, timeout=60, interval=0.2)
                assert set(receiver.ids()) == expected
                listed: list[str] = []
                cursor = None
                while True:
                    page = (
                        await http.get(
                            "/v1/runs", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
                        )
                    ).json()
                    listed += [r["id"] for r in page["data"]]
                    cursor = page["nextCursor"]
                    if cursor is None:
                        break
                assert sorted(listed) == sorted(ids)  # one run per key, however often it was retried
                assert all(p.poll() is None for _, p in procs.procs)  # nobody had to be restarted
                delivered = time.time() - down - outage
    finally:
        await receiver.stop()
    report(
        "redis crash",
        runs=RUNS,
        messages=len(expected),
        redis_down_s=round(outage, 1),
        creates_refused_503=refused,
        lease_s=procs.settings.lease_seconds,
        runs_retried_after_lease_lapsed=retried,
        api_ready_after_restart_s=round(ready_after, 2),
        all_delivered_after_restart_s=round(delivered, 1),
        processes_restarted=0,
        appendfsync="always",
    )
