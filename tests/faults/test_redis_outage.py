"""Redis stops and comes back (AOF, appendfsync always) under load: 503 meanwhile, every process
reconnects without a restart, and no committed transition or delivery is lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from orchestrator.embedded import EmbeddedRedis, free_port
from tests.conftest import KEY_A, make_settings, spawn, wait_for
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(180)


async def create(http: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        resp = await http.post("/v1/flows/echo/runs", json={"input": {"text": str(i)}})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    return ids


async def test_processes_ride_out_a_redis_restart(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "aof"
    server = EmbeddedRedis(port=port, data_dir=data, appendfsync="always")
    server.start()
    settings = make_settings(
        server.url,
        lease_seconds=2.0,
        requeue_after_seconds=3.0,
        webhook_retry_schedule=(0.2, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0),
    )
    api_port = free_port()
    procs = [
        spawn(settings, "api", "--port", str(api_port), log=tmp_path / "api.log"),
        spawn(settings, "worker", log=tmp_path / "worker.log"),
        spawn(settings, "dispatcher", log=tmp_path / "dispatcher.log"),
    ]
    receiver = await Receiver().start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10
        ) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=30)
            assert (await http.post("/v1/webhooks", json={"url": receiver.url})).status_code == 201
            before = await create(http, 20)
            await wait_for(lambda: len(receiver.requests) >= 10, timeout=30)

            server.stop()  # Redis goes away mid-load
            seen_503 = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not seen_503:
                resp = await http.get(f"/v1/runs/{before[0]}")
                seen_503 = resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable"
            assert seen_503
            assert (await http.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).status_code == 503

            server = EmbeddedRedis(port=port, data_dir=data, appendfsync="always")
            server.start()  # the same data comes back from the AOF
            await wait_for(ready, timeout=30)
            after = await create(http, 20)

            async def all_done() -> bool:
                for run_id in before + after:
                    resp = await http.get(f"/v1/runs/{run_id}")
                    if resp.status_code != 200 or resp.json()["status"] != "success":
                        return False
                return True

            try:
                await wait_for(all_done, timeout=60, interval=0.2)
            except AssertionError:
                states = {}
                for run_id in before + after:
                    resp = await http.get(f"/v1/runs/{run_id}")
                    body = resp.json()
                    states[run_id] = (resp.status_code, body.get("status"), body.get("attempt"))
                alive = [p.poll() for p in procs]
                tail = (tmp_path / "worker.log").read_text()[-3000:]
                stuck = [v for v in states.values() if v[1] != "success"]
                raise AssertionError(f"not all done: {stuck} processes: {alive}\n{tail}") from None

            def all_delivered() -> bool:
                got = {(r.json["data"]["id"], r.json["type"]) for r in receiver.requests}
                return all(
                    (rid, f"execution.{t}") in got
                    for rid in before + after
                    for t in ("queued", "running", "success")
                )

            await wait_for(all_delivered, timeout=60, interval=0.2)
            assert all(p.poll() is None for p in procs)  # nobody had to be restarted
            events = (await http.get(f"/v1/runs/{before[0]}/events")).json()["data"]
            assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
            # the log written before the outage survived the restart and goes on after it
            assert events[0]["type"] == "execution.queued" and events[-1]["type"] == "execution.success"
    finally:
        await receiver.stop()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        server.stop()
