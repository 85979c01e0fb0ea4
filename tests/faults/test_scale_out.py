"""2 APIs, 3 workers and 2 dispatchers on one Redis under load; one of each is SIGKILLed.
Nothing is lost, and nothing runs twice except as a new attempt after its worker was lost."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from orchestrator.embedded import EmbeddedRedis, free_port
from tests.conftest import KEY_A, make_settings, spawn, wait_for
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(240)
RUNS = 120


async def test_killing_one_of_each_loses_nothing(tmp_path: Path) -> None:
    server = EmbeddedRedis()
    server.start()
    settings = make_settings(
        server.url,
        lease_seconds=2.0,
        requeue_after_seconds=3.0,
        webhook_retry_schedule=(0.2, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0),
    )
    ports = [free_port(), free_port()]
    apis = [spawn(settings, "api", "--port", str(p)) for p in ports]
    workers = [spawn(settings, "worker") for _ in range(3)]
    dispatchers = [spawn(settings, "dispatcher") for _ in range(2)]
    receiver = await Receiver().start()
    clients = [
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{p}", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10
        )
        for p in ports
    ]
    try:
        for c in clients:

            async def ready(c: httpx.AsyncClient = c) -> bool:
                try:
                    return (await c.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=30)
        assert (await clients[1].post("/v1/webhooks", json={"url": receiver.url})).status_code == 201
        ids: list[str] = []

        async def create(i: int) -> None:
            body = {"input": {"seconds": 0.3}}
            for c in (clients[i % 2], clients[1]):  # the first API may be dead: fall back to the other
                try:
                    resp = await c.post(
                        "/v1/flows/slow/runs", json=body, headers={"Idempotency-Key": f"k{i}"}
                    )
                except httpx.HTTPError:
                    continue
                if resp.status_code == 202:
                    ids.append(resp.json()["id"])
                    return
            raise AssertionError(f"run {i} could not be created")

        first = asyncio.gather(*(create(i) for i in range(RUNS // 2)))
        await wait_for(lambda: len(receiver.requests) > 20, timeout=30)
        for proc in (apis[0], workers[0], dispatchers[0]):  # one of each, mid-load
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        await first
        await asyncio.gather(*(create(i) for i in range(RUNS // 2, RUNS)))
        assert len(set(ids)) == RUNS

        async def all_done() -> bool:
            for run_id in ids:
                resp = await clients[1].get(f"/v1/runs/{run_id}")
                if resp.json()["status"] != "success":
                    return False
            return True

        await wait_for(all_done, timeout=120, interval=0.5)

        def all_delivered() -> bool:
            got = {(r.json["data"]["id"], r.json["type"]) for r in receiver.requests}
            return all(
                (rid, f"execution.{t}") in got for rid in ids for t in ("queued", "running", "success")
            )

        await wait_for(all_delivered, timeout=120, interval=0.5)
        for run_id in ids:
            log = (await clients[1].get(f"/v1/runs/{run_id}/events")).json()["data"]
            assert [e["sequence"] for e in log] == list(range(1, len(log) + 1))
            starts = Counter(e["data"]["attempt"] for e in log if e["type"] == "execution.running")
            assert all(n == 1 for n in starts.values())  # each attempt started once
            assert [e["type"] for e in log].count("execution.success") == 1
    finally:
        for c in clients:
            await c.aclose()
        await receiver.stop()
        for proc in [*apis, *workers, *dispatchers]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*apis, *workers, *dispatchers]:
            proc.wait(timeout=15)
        server.stop()
