"""The dispatcher is SIGKILLed 5 times while 2,000 messages go to 3 endpoints (6,000 deliveries):
every (message, endpoint) arrives, and the only duplicates are attempts that were in flight."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import tenant_client, wait_for
from tests.faults.stack import event_log, stack, wait_ready
from tests.receiver import Receiver
from tests.report import report

pytestmark = pytest.mark.timeout(300)
RUNS = 1000  # each is queued then cancelled: 2,000 messages
KILLS = 5
# An attempt is "in flight" at a kill if it reached the receiver this shortly before it (the
# answer and its recording take milliseconds; the margin covers a busy 2-core machine)...
IN_FLIGHT_BEFORE = 2.0
# ...or shortly after: it was sent before the kill, but the receivers share this test's event loop,
# which may be late to read it. A restarted dispatcher needs over a second to send anything.
IN_FLIGHT_AFTER = 0.5


async def answer_soon(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(0.01)
    return web.Response(status=200)


async def test_dispatcher_killed_five_times_loses_no_delivery(tmp_path: Path) -> None:
    receivers = [await Receiver(default=answer_soon).start() for _ in range(3)]
    wall = time.time() - time.monotonic()  # Recorded.at is monotonic; kills are wall-clock
    try:
        async with stack(tmp_path) as (procs, _):
            base = procs.api()
            procs.start("dispatcher")
            async with tenant_client(base) as http:
                await wait_ready(http)
                for r in receivers:
                    assert (await http.post("/v1/webhooks", json={"url": r.url})).status_code == 201
                items = [{"input": {"seconds": 1}} for _ in range(RUNS)]
                resp = await http.post("/v1/flows/slow/runs/batch", json={"items": items})
                assert resp.status_code == 202, resp.text
                ids = [run["id"] for run in resp.json()["data"]]
                gate = asyncio.Semaphore(20)

                async def cancel(run_id: str) -> None:
                    async with gate:
                        assert (await http.post(f"/v1/runs/{run_id}/cancel")).status_code == 200

                cancelling = asyncio.gather(*(cancel(i) for i in ids))  # more messages while we kill

                def received() -> int:
                    return sum(len(r.requests) for r in receivers)

                total = 2 * RUNS * len(receivers)
                for k in range(KILLS):
                    await wait_for(lambda k=k: received() >= (k + 1) * total // (KILLS + 2), timeout=60)
                    procs.kill(procs.alive("dispatcher")[0])
                    procs.start("dispatcher")
                await cancelling
                expected = {e["id"] for run_id in ids for e in await event_log(http, run_id)}
                assert len(expected) == 2 * RUNS

                def everything() -> bool:
                    return all(set(r.ids()) >= expected for r in receivers)

                try:
                    await wait_for(everything, timeout=120, interval=0.2)
                except AssertionError:
                    missing = [len(expected - set(r.ids())) for r in receivers]
                    raise AssertionError(f"missing {missing}\n{procs.log_tail('dispatcher')}") from None
                hooks = [h["id"] for h in (await http.get("/v1/webhooks")).json()["data"]]

                async def settled() -> bool:
                    # attempts in flight at a kill stay pending until their claim expires
                    # (timeout + 15 s), are sent again and recorded; nothing may end failed
                    for hook in hooks:
                        for status in ("pending", "failed"):
                            page = await http.get(
                                f"/v1/webhooks/{hook}/deliveries", params={"status": status}
                            )
                            if page.json()["data"]:
                                assert status == "pending", page.json()["data"][0]
                                return False
                    return True

                await wait_for(settled, timeout=90, interval=0.5)
                done = time.time()
    finally:
        for r in receivers:
            await r.stop()

    kills = sorted(procs.killed_at.values())
    duplicates = 0
    resumed: list[float] = []
    for r in receivers:
        assert set(r.ids()) == expected  # nothing else was sent
        first: dict[str, float] = {}
        for rec in r.requests:
            first.setdefault(rec.id, rec.at + wall)
        for msg_id, n in Counter(r.ids()).items():
            if n == 1:
                continue
            duplicates += n - 1
            # a duplicate is an attempt that was in flight when a dispatcher died, sent again
            sent = first[msg_id]
            assert any(-IN_FLIGHT_AFTER <= k - sent <= IN_FLIGHT_BEFORE for k in kills), (msg_id, sent, kills)
            assert n - 1 <= KILLS
    per_kill_cap = KILLS * len(receivers) * procs.settings.webhook_endpoint_concurrency
    assert duplicates <= per_kill_cap  # at most what could be in flight at each kill
    arrivals = sorted(rec.at + wall for r in receivers for rec in r.requests)
    for k in kills:  # the restarted dispatcher's first sends (late reads of in-flight ones aside)
        resumed.append(next(a for a in arrivals if a > k + IN_FLIGHT_AFTER) - k)
    report(
        "dispatcher crash",
        messages=len(expected),
        endpoints=len(receivers),
        deliveries=len(expected) * len(receivers),
        dispatcher_kills=len(kills),
        duplicates=duplicates,
        duplicate_cap=per_kill_cap,
        deliveries_resume_p50_s=round(statistics.median(resumed), 2),
        deliveries_resume_max_s=round(max(resumed), 2),
        all_delivered_after_last_kill_s=round(done - kills[-1], 1),
    )
