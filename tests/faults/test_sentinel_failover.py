"""The Redis primary is SIGKILLed under load; Sentinel promotes its replica and every process follows.

A primary, one replica and three Sentinels (``redis-server --sentinel``); api + 2 workers + 2
dispatchers on ``ORCH_REDIS_URL=redis+sentinel://...``; a client creating runs with
Idempotency-Keys, retrying on 503 and on connection errors; one endpoint receiving everything.
No process is restarted but the killed redis-server, which comes back (after the promotion, as
its supervisor would bring it back) and is turned into the new primary's replica by Sentinel.

With ``ORCH_REDIS_MIN_REPLICAS_ACK=1`` every run answered 202 exists afterwards and ends, and
every transition it kept is delivered; with 0 the same is measured and what was lost reported.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.dev.sentinel import ReplicatedRedis
from tests.conftest import tenant_client, wait_for
from tests.faults.relay import DelayRelay
from tests.faults.stack import Stack, event_log, runs_of, stack, wait_ready
from tests.receiver import Receiver
from tests.report import report

pytestmark = pytest.mark.timeout(240)
RUNS = 150
CREATORS = 4
LAG = 0.2
COMMIT = re.compile(r"^run (exec_\S+) seq (\d+) -> (\S+) \(attempt (\d+)\)")
SHORT = re.compile(r"run (exec_\S+) (\S+) was not confirmed by")
Transition = tuple[str, int, str, int]  # run id, sequence, event type, attempt


class Creator:
    """A careful client: every create has an Idempotency-Key and is retried until it is answered 202."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.ids: dict[int, str] = {}  # key number -> the run id answered 202
        self.refused: list[float] = []  # when a create was refused (503 or no answer)
        self.answered: list[tuple[float, float]] = []  # (sent, answered 202) of each create

    async def create(self, i: int) -> None:
        while True:
            sent = time.time()
            try:
                resp = await self.http.post(
                    "/v1/flows/slow/runs",
                    json={"input": {"seconds": 0.2}},
                    headers={"Idempotency-Key": f"run-{i}"},
                )
            except httpx.HTTPError:
                resp = None
            if resp is not None and resp.status_code == 202:
                self.ids[i] = resp.json()["id"]
                self.answered.append((sent, time.time()))
                return
            if resp is not None:  # nothing but "unavailable" is allowed while Redis fails over
                assert resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable", resp.text
            self.refused.append(time.time())
            await asyncio.sleep(0.05)  # a client's back-off, not a sync point

    async def run(self) -> None:
        todo = iter(range(RUNS))

        async def creator() -> None:
            for i in todo:
                await self.create(i)

        await asyncio.gather(*(creator() for _ in range(CREATORS)))


def committed(procs: Stack) -> tuple[set[Transition], set[tuple[str, str]]]:
    """Every transition the API and the workers logged as committed (ORCH_LOG_FORMAT=json), and the
    (run, event type) a worker logged as not confirmed by the replicas in time."""
    out: set[Transition] = set()
    unconfirmed: set[tuple[str, str]] = set()
    for role in ("api", "worker"):
        for _, record in procs.json_logs(role):
            message = record.get("message", "")
            if (found := COMMIT.match(message)) and found[3] != "execution.progress":
                out.add((found[1], int(found[2]), found[3], int(found[4])))
            elif found := SHORT.search(message):
                unconfirmed.add((found[1], found[2]))
    return out, unconfirmed


async def kept(http: httpx.AsyncClient, run_ids: list[str]) -> tuple[set[Transition], set[str], int]:
    """The transitions the runs' event logs hold after the failover, their message ids, and how
    many runs took more than one attempt."""
    transitions: set[Transition] = set()
    messages: set[str] = set()
    rerun = 0
    for run_id in run_ids:
        log = await event_log(http, run_id)  # gap-free across the failover
        rerun += len({e["data"]["attempt"] for e in log}) > 1
        for e in log:
            if e["type"] != "execution.progress":
                transitions.add((run_id, e["sequence"], e["type"], e["data"]["attempt"]))
                messages.add(e["id"])
    return transitions, messages, rerun


async def explained(
    condition: Callable[[], Any], why: Callable[[], Any], procs: Stack, *, timeout: float
) -> None:
    """wait_for, failing with what was missing and the end of the processes' logs."""
    try:
        await wait_for(condition, timeout=timeout, interval=0.2)
    except AssertionError:
        reason = why()
        if asyncio.iscoroutine(reason):
            reason = await reason
        tails = "\n".join(procs.log_tail(role, 1500) for role in ("api", "worker", "dispatcher"))
        raise AssertionError(f"{reason}\n{tails}") from None


@pytest.mark.parametrize(
    ("min_replicas_ack", "replicas"), [(1, 1), (0, 1), (1, 2)], ids=["ack1", "ack0", "ack1-2replicas"]
)
async def test_a_sentinel_failover_under_load(tmp_path: Path, min_replicas_ack: int, replicas: int) -> None:
    # Replicas run LAG behind, as over a slow link: the window asynchronous replication leaves open.
    # (Sentinel would re-point a replica that replicates through a relay after failover-timeout:
    # 20 s is longer than the test's load before the kill.)
    relay = DelayRelay(LAG)
    group = ReplicatedRedis(
        tmp_path / "redis", replicas=replicas, failover_timeout_ms=20_000, upstream_port=relay.port
    )
    await relay.start(group.primary.port)
    await asyncio.to_thread(group.start)
    receiver = await Receiver().start()
    try:
        async with stack(
            tmp_path,
            redis_url=group.url,
            redis_min_replicas_ack=min_replicas_ack,
            redis_replicas_ack_timeout_seconds=0.5,
            log_format="json",
        ) as (procs, _):
            base = procs.api()
            for _ in range(2):
                procs.start("worker")
                procs.start("dispatcher")
            async with tenant_client(base) as http:
                await wait_ready(http)
                assert (await http.post("/v1/webhooks", json={"url": receiver.url})).status_code == 201
                client = Creator(http)
                loading = asyncio.create_task(client.run())
                await explained(
                    lambda: len(client.ids) >= RUNS // 3 and len(receiver.requests) >= 20,
                    lambda: f"load: {len(client.ids)} created, {len(receiver.requests)} delivered",
                    procs,
                    timeout=60,
                )
                old_port = group.primary_port()
                dead, killed = group.kill_primary()  # mid-load: creates, runs and deliveries in flight
                new_port = await asyncio.to_thread(group.wait_promoted, old_port)
                promoted = time.time() - killed
                await asyncio.to_thread(dead.start)  # back empty; Sentinel makes it the new replica
                await loading
                first = min(answered for sent, answered in client.answered if sent > killed)
                # what a create cost before the kill: with N=1 it waits for the lagging replica
                before = sorted(answered - sent for sent, answered in client.answered if answered < killed)
                create_p50_ms = before[len(before) // 2] * 1000
                refused = sum(t > killed for t in client.refused)
                ids = list(client.ids.values())
                assert len(set(ids)) == RUNS  # one run per key, however often it was retried

                states = await runs_of(http, ids)
                missing = [i for i in ids if i not in states]
                alive = [i for i in ids if i in states]

                async def all_ended() -> bool:
                    now = await runs_of(http, alive)
                    return all(now.get(i, {}).get("status") in ("success", "failed") for i in alive)

                async def unended() -> str:
                    now = await runs_of(http, alive)
                    return (
                        f"not ended: {[(i, s['status']) for i, s in now.items() if s['status'] != 'success']}"
                    )

                await explained(all_ended, unended, procs, timeout=90)
                ended = await runs_of(http, alive)
                succeeded = sum(s["status"] == "success" for s in ended.values())
                transitions, expected, retried = await kept(http, alive)
                await explained(
                    lambda: set(receiver.ids()) >= expected,
                    lambda: f"undelivered: {sorted(expected - set(receiver.ids()))[:10]}",
                    procs,
                    timeout=90,
                )
                delivered = time.time() - killed
                logged, unconfirmed = committed(procs)
                lost = {t for t in logged if t not in transitions}
                phantoms = set(receiver.ids()) - expected  # delivered, then lost by the failover
                assert all(p.poll() is None for _, p in procs.procs)  # no process restarted
                if min_replicas_ack:
                    assert missing == []  # every create answered 202 survived the primary's death
                    assert succeeded == len(alive)
                    # every transition the replicas confirmed survived; no webhook for one they lacked
                    assert {t for t in lost if (t[0], t[2]) not in unconfirmed} == set()
                    assert phantoms == set()
                assert new_port != old_port
    finally:
        await receiver.stop()
        await asyncio.to_thread(group.stop)
        await relay.stop()
    report(
        f"sentinel failover, ORCH_REDIS_MIN_REPLICAS_ACK={min_replicas_ack}, {replicas} replica(s)",
        runs=RUNS,
        replica_lag_s=LAG,
        create_p50_ms_before_kill=round(create_p50_ms),
        processes="api, 2 workers, 2 dispatchers",
        promoted_after_s=round(promoted, 1),
        failover_s=round(first - killed, 1),
        creates_refused=refused,
        runs_answered_202_lost=len(missing),
        committed_transitions_lost=len(lost),
        deliveries_of_lost_transitions=len(phantoms),
        runs_rerun_as_next_attempt=retried,
        runs_succeeded=f"{succeeded}/{len(alive)}",
        all_delivered_after_kill_s=round(delivered, 1),
        processes_restarted=0,
    )
