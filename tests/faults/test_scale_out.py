"""2 APIs, 3 workers and 2 dispatchers on one Redis under load; one of each is SIGKILLed.
Nothing is lost, and nothing runs twice except as a new attempt after its worker was lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import tenant_client, wait_for
from tests.faults.stack import event_log, runs_of, stack, wait_ready
from tests.receiver import Receiver
from tests.report import report

pytestmark = pytest.mark.timeout(240)
RUNS = 200


async def test_killing_one_of_each_loses_nothing(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    try:
        async with stack(tmp_path, log_format="json") as (procs, _):
            bases = [procs.api(), procs.api()]
            for _ in range(3):
                procs.start("worker")
            for _ in range(2):
                procs.start("dispatcher")
            clients = [tenant_client(b) for b in bases]
            try:
                for c in clients:
                    await wait_ready(c)
                assert (await clients[1].post("/v1/webhooks", json={"url": receiver.url})).status_code == 201
                ids: list[str] = []
                failovers = 0

                async def create(i: int) -> None:
                    # as a load balancer would: the first API may be dead, then the other takes it
                    nonlocal failovers
                    body = {"input": {"seconds": 1.5}}
                    for c in (clients[i % 2], clients[1]):
                        try:
                            resp = await c.post(
                                "/v1/flows/slow/runs", json=body, headers={"Idempotency-Key": f"k{i}"}
                            )
                        except httpx.HTTPError:
                            failovers += 1
                            continue
                        if resp.status_code == 202:
                            ids.append(resp.json()["id"])
                            return
                    raise AssertionError(f"run {i} could not be created")

                first = asyncio.gather(*(create(i) for i in range(RUNS // 2)))
                await wait_for(lambda: len(receiver.requests) > 30, timeout=30)
                victim = procs.alive("worker")[0]

                async def victim_is_running_one() -> bool:
                    # its log names the runs it started (flows log each step with run_id)
                    mine = {
                        rec["run_id"]
                        for pid, rec in procs.json_logs("worker")
                        if pid == victim.pid and "run_id" in rec
                    }
                    states = await runs_of(survivor, list(mine))
                    return any(s["status"] == "running" for s in states.values())

                survivor = clients[1]
                await wait_for(victim_is_running_one, timeout=30, interval=0.05)
                killed = time.time()
                procs.kill(victim)
                for role in ("api", "dispatcher"):  # one of each, mid-load
                    procs.kill(procs.alive(role)[0])
                await first
                await asyncio.gather(*(create(i) for i in range(RUNS // 2, RUNS)))
                assert len(set(ids)) == RUNS

                async def all_done() -> bool:
                    states = await runs_of(survivor, ids)
                    return all(states.get(i, {}).get("status") == "success" for i in ids)

                await wait_for(all_done, timeout=120, interval=0.5)

                def all_delivered() -> bool:
                    got = {(r.json["data"]["id"], r.json["type"]) for r in receiver.requests}
                    return all(
                        (rid, f"execution.{t}") in got
                        for rid in ids
                        for t in ("queued", "running", "success")
                    )

                await wait_for(all_delivered, timeout=120, interval=0.5)
                recovered = time.time() - killed
                reruns = 0
                for run_id in ids:
                    log = await event_log(survivor, run_id)
                    starts = Counter(e["data"]["attempt"] for e in log if e["type"] == "execution.running")
                    assert all(n == 1 for n in starts.values())  # each attempt started once
                    assert [e["type"] for e in log].count("execution.success") == 1
                    reruns += len(starts) - 1
                assert reruns >= 1  # the killed worker's runs were taken over as their next attempt
            finally:
                for c in clients:
                    await c.aclose()
    finally:
        await receiver.stop()
    report(
        "scale-out",
        apis=2,
        workers=3,
        dispatchers=2,
        runs=RUNS,
        killed="1 api, 1 worker, 1 dispatcher",
        create_failovers=failovers,
        attempts_rerun=reruns,
        all_done_and_delivered_after_kills_s=round(recovered, 1),
    )
