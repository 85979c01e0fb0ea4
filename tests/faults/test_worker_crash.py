"""Workers are SIGKILLed again and again while 200 executions run: every run ends, lost attempts
are re-run as the next attempt, and a run whose last allowed attempt is lost ends `worker_lost`."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tenant_client, wait_for
from tests.faults.stack import event_log, runs_of, stack, wait_ready
from tests.report import report

pytestmark = pytest.mark.timeout(300)
SHORT = 180  # runs that finish in 0.5-3 s unless their worker dies
LONG = 20  # runs that only end by losing their last attempt
MAX_ATTEMPTS = 3
WORKERS = 3
RANDOM_KILLS = 6


def at(event: dict[str, Any]) -> float:
    """An event's timestamp as Unix seconds."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_workers_killed_over_and_over_lose_no_run(tmp_path: Path) -> None:
    rng = random.Random(8)
    async with stack(tmp_path, lease_seconds=1.0, max_attempts=MAX_ATTEMPTS, log_format="json") as (procs, _):
        base = procs.api()
        for _ in range(WORKERS):
            procs.start("worker")
        async with tenant_client(base) as http:
            await wait_ready(http)
            short: list[str] = []
            long: list[str] = []
            partial: dict[str, dict[str, int]] = {}
            for i in range(SHORT + LONG):
                is_long = i % 10 == 0
                data = {"seconds": 600, "partial": {"i": i}} if is_long else {"seconds": rng.uniform(0.5, 3)}
                resp = await http.post("/v1/flows/slow/runs", json={"input": data})
                assert resp.status_code == 202, resp.text
                (long if is_long else short).append(resp.json()["id"])
                if is_long:
                    partial[long[-1]] = {"i": i}
            ids = short + long

            async def running_count() -> int:
                states = await runs_of(http, ids)
                return sum(1 for s in states.values() if s["status"] == "running")

            await wait_for(lambda: running_count(), timeout=30, interval=0.2)
            started = time.time()
            # Phase 1: one worker at a time, at random, each replaced at once (a crash-looping fleet).
            for _ in range(RANDOM_KILLS):
                victim = rng.choice(procs.alive("worker"))
                procs.kill(victim)
                procs.start("worker")
                await asyncio.sleep(1.0)  # spreads the kills over the runs' lifetime (not a sync point)
            one_at_a_time = set(procs.killed_at)  # pids killed while other workers lived on
            # Phase 2: every worker at once, until the long runs have lost every attempt they have.
            passes = 0
            while True:
                states = await runs_of(http, long)
                if all(s["status"] != "running" for s in states.values()):
                    break
                passes += 1
                assert passes <= MAX_ATTEMPTS + 1, states

                async def on_a_worker() -> dict[str, int] | None:
                    # stepsRun starts at 0 for each attempt: >= 1 means a live worker runs it
                    now = await runs_of(http, long)
                    left = [s for s in now.values() if s["status"] == "running"]
                    started = all(s["metrics"]["stepsRun"] >= 1 for s in left)
                    return {s["id"]: s["attempt"] for s in left} if started else None

                before: dict[str, int] = await wait_for(on_a_worker, timeout=60, interval=0.2)
                for victim in procs.alive("worker"):
                    procs.kill(victim)
                for _ in range(WORKERS):
                    procs.start("worker")

                async def reaped(before: dict[str, int] = before) -> bool:
                    now = await runs_of(http, list(before))
                    return all(s["status"] != "running" or s["attempt"] > before[i] for i, s in now.items())

                await wait_for(reaped, timeout=60, interval=0.2)

            async def all_ended() -> dict[str, dict[str, Any]] | None:
                states = await runs_of(http, ids)
                done = len(states) == len(ids) and all(
                    s["status"] in ("success", "failed", "cancelled") for s in states.values()
                )
                return states if done else None

            try:
                states = await wait_for(all_ended, timeout=120, interval=0.5)
            except AssertionError:
                raise AssertionError(procs.log_tail("worker")) from None
            ended = time.time()

            # Which worker process ran each attempt: flows log each step with run_id and attempt.
            ran_on = {
                (rec["run_id"], rec["attempt"]): pid
                for pid, rec in procs.json_logs("worker")
                if "run_id" in rec and "attempt" in rec
            }
            retried = lost = 0
            # kill -> the lost attempt reaped (next one queued): with survivors / with all dead
            detect: dict[bool, list[float]] = {True: [], False: []}
            rerun: list[float] = []  # kill -> the next attempt's first step on a live worker
            for run_id in ids:
                run = states[run_id]
                log = await event_log(http, run_id)
                types = [e["type"] for e in log]
                assert types[0] == "execution.queued" and types.count(types[-1]) == 1
                starts = [e for e in log if e["type"] == "execution.running"]
                # every attempt started exactly once, in order, with no gap
                assert [e["data"]["attempt"] for e in starts] == list(range(1, run["attempt"] + 1))
                steps = Counter(
                    (e["data"]["attempt"], e["data"]["metrics"]["stepsRun"])
                    for e in log
                    if e["type"] == "execution.progress"
                )
                assert all(n == 1 for n in steps.values()), steps  # no attempt ran twice
                lost_attempts = [e["data"]["attempt"] - 1 for e in starts[1:]]
                if run["status"] == "failed":
                    lost_attempts.append(run["attempt"])
                for n in lost_attempts:
                    pid = ran_on.get((run_id, n))
                    if pid is None:
                        continue  # its worker died before the attempt's first step was logged
                    # an attempt is only ever given up on because its worker really died
                    assert pid in procs.killed_at, (run_id, n, pid)
                    reaped = next(
                        (e for e in log if e["data"]["attempt"] == n + 1 or e["data"]["status"] == "failed"),
                    )
                    detect[pid in one_at_a_time].append(at(reaped) - procs.killed_at[pid])
                    next_steps = [
                        e for e in log if e["type"] == "execution.progress" and e["data"]["attempt"] == n + 1
                    ]
                    if next_steps:
                        rerun.append(at(next_steps[0]) - procs.killed_at[pid])
                if run["status"] == "success":
                    assert run["attempt"] <= MAX_ATTEMPTS and run["error"] is None
                    retried += run["attempt"] > 1
                else:
                    # the only way to fail here: the last allowed attempt's worker died
                    assert run["status"] == "failed", run
                    assert run["error"]["code"] == "worker_lost", run
                    assert run["attempt"] == MAX_ATTEMPTS and run["error"]["details"] == {
                        "attempts": MAX_ATTEMPTS
                    }
                    lost += 1
                if run_id in long:
                    assert run["status"] == "failed" and run["output"] == partial[run_id]
            assert all(
                states[i]["status"] == "success" or states[i]["attempt"] == MAX_ATTEMPTS for i in short
            )
            assert lost >= LONG and retried > 0
    report(
        "worker crash",
        runs=len(ids),
        worker_kills=len(procs.killed_at),
        attempts_lost=sum(len(d) for d in detect.values()),
        retried_then_succeeded=retried,
        worker_lost=lost,
        lease_s=1.0,
        reaped_p50_s_survivors=round(statistics.median(detect[True]), 2),
        reaped_max_s_survivors=round(max(detect[True]), 2),
        reaped_p50_s_all_dead=round(statistics.median(detect[False]), 2),
        reaped_max_s_all_dead=round(max(detect[False]), 2),
        rerun_p50_s=round(statistics.median(rerun), 2),
        rerun_max_s=round(max(rerun), 2),
        all_ended_after_first_kill_s=round(ended - started, 1),
    )
