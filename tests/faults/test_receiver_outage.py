"""Receivers go away under load and come back, with a compressed retry schedule: every message
arrives under its one `webhook-id`; an endpoint disabled during its outage heals and replays."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import tenant_client, wait_for
from tests.faults.stack import event_log, runs_of, stack, wait_ready
from tests.receiver import Receiver
from tests.report import report
from webhooks import verify

pytestmark = pytest.mark.timeout(240)
RUNS = 150
# Five attempts over 5.7 s: enough to ride out the short outage, not the long one.
SCHEDULE = (0.2, 0.5, 1.0, 2.0, 2.0)
DISABLE_AFTER = 4.0


async def test_endpoints_recover_from_outages_without_losing_a_message(tmp_path: Path) -> None:
    short_down = True
    answers: list[tuple[str, int]] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        status = 503 if short_down else 200
        answers.append((request.headers["webhook-id"], status))
        return web.Response(status=status)

    short = await Receiver(default=flaky).start()  # answers 503 for a while
    long = await Receiver().start()  # refuses connections for longer (stopped)
    long_port = int(long.url.split(":")[2].split("/")[0])
    try:
        async with stack(
            tmp_path,
            webhook_retry_schedule=SCHEDULE,
            webhook_disable_after_seconds=DISABLE_AFTER,
            webhook_probe_schedule=(0.5,),
            webhook_timeout=1.0,
        ) as (procs, _):
            base = procs.api()
            procs.start("worker")
            procs.start("dispatcher")
            async with tenant_client(base) as http:
                await wait_ready(http)
                hooks = {}
                for name, r in (("short", short), ("long", long)):
                    resp = await http.post("/v1/webhooks", json={"url": r.url})
                    assert resp.status_code == 201
                    hooks[name] = resp.json()
                await long.stop()
                outage_started = time.time()
                ids: list[str] = []

                async def load() -> None:
                    for i in range(RUNS):
                        resp = await http.post("/v1/flows/echo/runs", json={"input": {"text": str(i)}})
                        assert resp.status_code == 202
                        ids.append(resp.json()["id"])
                        await asyncio.sleep(0.05)  # paces the load across the outage (not a sync point)

                loading = asyncio.create_task(load())
                # The short outage ends once a message has been refused four times (about 2 s,
                # well inside both the retry schedule and DISABLE_AFTER).
                await wait_for(
                    lambda: max(Counter(i for i, _ in answers).values(), default=0) >= 4, timeout=30
                )
                short_down = False
                short_outage = time.time() - outage_started

                async def disabled() -> bool:
                    return (await http.get(f"/v1/webhooks/{hooks['long']['id']}")).json()["enabled"] is False

                await wait_for(disabled, timeout=30, interval=0.1)  # failing for DISABLE_AFTER: parked
                disabled_after = time.time() - outage_started
                await loading
                await long.start(long_port)
                back = time.time()
                assert (await http.get(f"/v1/webhooks/{hooks['short']['id']}")).json()["enabled"] is True

                async def healed() -> bool:
                    return (await http.get(f"/v1/webhooks/{hooks['long']['id']}")).json()["enabled"] is True

                await wait_for(healed, timeout=30, interval=0.1)
                healed_after = time.time() - back

                async def all_succeeded() -> bool:
                    states = await runs_of(http, ids)
                    return all(states.get(i, {}).get("status") == "success" for i in ids)

                await wait_for(all_succeeded, timeout=30, interval=0.2)
                expected = {  # endpoints that name no events get status changes, not progress
                    e["id"]
                    for run_id in ids
                    for e in await event_log(http, run_id)
                    if e["type"] != "execution.progress"
                }
                assert len(expected) == 3 * RUNS  # queued, running, success

                def all_arrived() -> bool:
                    got_short = {i for i, status in answers if status == 200}
                    got_long = {r.id for r in long.requests if r.json["type"] != "webhook.test"}
                    return got_short >= expected and got_long >= expected

                await wait_for(all_arrived, timeout=60, interval=0.2)
                complete_after = time.time() - back
    finally:
        await short.stop()
        await long.stop()

    # One webhook-id per message: every attempt of it, failed or not, carried the same id.
    assert {i for i, _ in answers} == expected
    refused = {i for i, status in answers if status == 503}
    assert refused and refused <= {i for i, status in answers if status == 200}
    most_refused = max(Counter(i for i, status in answers if status == 503).values())
    assert {r.id for r in long.requests if r.json["type"] != "webhook.test"} == expected
    for r in long.requests:  # what the healed endpoint got is signed with its own secret
        assert verify(r.body, r.headers, hooks["long"]["secret"]).id == r.id
    report(
        "receiver outage",
        runs=RUNS,
        messages=len(expected),
        endpoints=2,
        retry_schedule_s="/".join(str(s) for s in SCHEDULE),
        short_outage_503_s=round(short_outage, 1),
        refused_then_retried=len(refused),
        most_refusals_of_one_message=most_refused,
        long_outage_refused_s=round(back - outage_started, 1),
        long_disabled_after_s=round(disabled_after, 1),
        healed_after_back_s=round(healed_after, 1),
        all_delivered_after_back_s=round(complete_after, 1),
        delivered="100%",
    )
