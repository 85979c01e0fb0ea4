import json
import os
import signal

import pytest
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.models import Execution, ExecutionStatus
from orchestrator.runs import keys
from orchestrator.runs.jobs import enqueue_run, job_id
from orchestrator.runs.store import RunStore
from orchestrator.settings import Settings
from orchestrator.worker.worker import WakingWorker
from tests.conftest import make_settings, running_worker, spawn, wait_for
from tests.runs.test_store import make_store, outbox

S = ExecutionStatus


@pytest.fixture
def store(redis: Redis, settings: Settings) -> RunStore:
    return make_store(redis, settings)


async def run_to_end(
    store: RunStore, flow: str, data: dict, timeout: float = 15.0, steps_total: int | None = None
) -> Execution:
    run = await store.create(tenant="a", flow_id=flow, input_json=json.dumps(data), steps_total=steps_total)

    async def ended() -> Execution | None:
        got = await store.get(run.id, tenant="a")
        return got if got.status.terminal else None

    result: Execution = await wait_for(ended, timeout=timeout)
    return result


async def test_success_records_output_metrics_and_duration(
    store: RunStore, worker: WakingWorker, redis: Redis
) -> None:
    done = await run_to_end(store, "echo", {"text": "hello"}, steps_total=1)
    assert done.status is S.success and done.output == {"text": "hello"}
    assert done.metrics.tokens_used == 5 and done.metrics.cost == pytest.approx(0.001)
    assert done.metrics.steps_run == 1 and done.metrics.steps_total == 1
    assert done.duration is not None and done.started_at is not None and done.error is None
    types = [e["type"] for e in await outbox(redis) if e["subject"] == done.id]
    assert types == ["execution.queued", "execution.running", "execution.progress", "execution.success"]


async def test_flow_error_fails_with_its_code_and_partial(store: RunStore, worker: WakingWorker) -> None:
    done = await run_to_end(store, "fail", {})
    assert done.status is S.failed and done.error is not None
    assert (done.error.code, done.error.message, done.error.details) == (
        "encrypted_pdf",
        "the PDF is encrypted",
        {"page": 1},
    )
    assert done.output == {"pages": 1}


async def test_uncaught_exception_is_flow_error_without_traceback(
    store: RunStore, worker: WakingWorker
) -> None:
    done = await run_to_end(store, "crash", {})
    assert done.status is S.failed and done.error is not None
    assert done.error.code == "flow_error" and done.error.message == "boom"
    assert done.error.details == {"type": "ValueError"}
    assert "Traceback" not in done.model_dump_json()


async def test_timeout_fails_with_timeout(store: RunStore, worker: WakingWorker) -> None:
    done = await run_to_end(store, "too-slow", {})
    assert done.status is S.failed and done.error is not None and done.error.code == "timeout"
    assert done.output == {"done": 0}


async def test_output_not_matching_model_fails(store: RunStore, worker: WakingWorker) -> None:
    done = await run_to_end(store, "bad-output", {})
    assert done.status is S.failed and done.error is not None and done.error.code == "invalid_output"
    assert done.error.details["fields"][0]["field"] == "output.text"


async def test_unknown_flow_fails_cleanly(store: RunStore, worker: WakingWorker) -> None:
    done = await run_to_end(store, "not-registered", {})
    assert done.status is S.failed and done.error is not None and done.error.code == "flow_not_found"


async def test_cancel_interrupts_a_running_flow_and_keeps_partial(
    store: RunStore, worker: WakingWorker, redis: Redis
) -> None:
    run = await store.create(
        tenant="a", flow_id="slow", input_json=json.dumps({"seconds": 60, "partial": {"pages": 2}})
    )

    async def stepped() -> bool:
        return (await store.get(run.id, tenant="a")).metrics.steps_run == 1

    await wait_for(stepped)
    cancelled = await store.cancel(run.id, tenant="a")
    assert cancelled.status is S.cancelled and cancelled.output == {"pages": 2}
    await wait_for(lambda: run.id not in worker.ctx["runner"].active, timeout=5)
    final = await store.get(run.id, tenant="a")
    assert final.status is S.cancelled and final.sequence == cancelled.sequence
    types = [e["type"] for e in await outbox(redis) if e["subject"] == run.id]
    assert types[-1] == "execution.cancelled" and types.count("execution.cancelled") == 1


async def test_cancelled_queued_run_never_starts(
    store: RunStore, settings: Settings, registry: Registry, redis: Redis
) -> None:
    run = await store.create(tenant="a", flow_id="echo", input_json='{"text":"x"}')
    await store.cancel(run.id, tenant="a")
    # put the job back, as if the cancel had raced the worker's pick-up
    await enqueue_run(redis, run.id, 1, queue_name=settings.queue_name)
    async with running_worker(settings, registry, burst=True) as w:
        await wait_for(lambda: w.jobs_complete + w.jobs_failed >= 1 or w.jobs_retried >= 1, timeout=10)
    final = await store.get(run.id, tenant="a")
    assert final.status is S.cancelled and final.started_at is None
    assert [e["type"] for e in await outbox(redis)] == ["execution.queued", "execution.cancelled"]


async def test_worker_wakes_on_enqueue_without_waiting_for_its_poll(
    store: RunStore, settings: Settings, registry: Registry, redis: Redis
) -> None:
    slow_poll = settings.model_copy(update={"worker_poll_delay": 3600.0})
    async with running_worker(slow_poll, registry):
        await wait_for(lambda: redis.zcard(keys.WORKERS), timeout=5)
        # The worker has done its first poll and now sleeps for an hour unless woken.
        done = await run_to_end(store, "noop", {}, timeout=30)
    assert done.status is S.success


async def test_sweep_enqueues_a_run_whose_job_was_lost(
    store: RunStore, worker: WakingWorker, settings: Settings, redis: Redis
) -> None:
    run = await store.create(tenant="a", flow_id="echo", input_json='{"text":"x"}')
    # Simulate an API that died after writing the run but before its job existed.
    await redis.zrem(settings.queue_name, job_id(run.id, 1))
    await redis.delete(f"arq:job:{job_id(run.id, 1)}")

    async def ended() -> bool:
        return (await store.get(run.id, tenant="a")).status is S.success

    await wait_for(ended, timeout=15)


async def kill_worker_mid_run(
    redis_url: str, registry: Registry, redis: Redis, *, max_attempts: int, data: dict
) -> Execution:
    """Start a worker process, SIGKILL it while a `slow` run is running, let another worker finish."""
    settings = make_settings(redis_url, lease_seconds=1.0, max_attempts=max_attempts)
    store = make_store(redis, settings)
    proc = spawn(settings, "worker")
    try:
        run = await store.create(tenant="a", flow_id="slow", input_json=json.dumps(data))

        async def running() -> bool:
            return (await store.get(run.id, tenant="a")).metrics.steps_run == 1

        await wait_for(running, timeout=20)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    async with running_worker(settings, registry):

        async def ended() -> Execution | None:
            got = await store.get(run.id, tenant="a")
            return got if got.status.terminal else None

        done: Execution = await wait_for(ended, timeout=30)
    return done


async def test_killed_worker_is_reaped_and_the_run_retried(
    redis_url: str, registry: Registry, redis: Redis
) -> None:
    done = await kill_worker_mid_run(redis_url, registry, redis, max_attempts=3, data={"seconds": 1.5})
    assert done.status is S.success and done.attempt == 2
    assert done.metrics.steps_run == 2  # the slow flow has 2 steps: attempt 2 starts over (was 3)
    events = [json.loads(e["body"])["data"] for e in await outbox(redis) if e["subject"] == done.id]
    running_attempts = [(d["status"], d["attempt"]) for d in events if d["status"] == "running"]
    assert ("running", 1) in running_attempts and ("running", 2) in running_attempts


async def test_last_attempt_lost_ends_worker_lost(redis_url: str, registry: Registry, redis: Redis) -> None:
    done = await kill_worker_mid_run(
        redis_url, registry, redis, max_attempts=1, data={"seconds": 60, "partial": {"p": 1}}
    )
    assert done.status is S.failed and done.error is not None and done.error.code == "worker_lost"
    assert done.output == {"p": 1} and done.attempt == 1


async def test_a_lost_attempt_unwinding_does_not_untrack_the_next_one(
    store: RunStore, settings: Settings, registry: Registry, redis: Redis
) -> None:
    # Regression: the old attempt's cleanup removed the new attempt from the heartbeat set, so a
    # healthy attempt 2 was reaped as if its worker had died.
    async with running_worker(settings, registry):
        run = await store.create(tenant="a", flow_id="sticky", input_json=json.dumps({"seconds": 5.0}))

        async def started() -> bool:
            return (await store.get(run.id, tenant="a")).status is S.running

        await wait_for(started)
        await redis.zadd(keys.LEASES, {run.id: 0})  # attempt 1's lease expires: it is lost

        async def ended() -> Execution | None:
            got = await store.get(run.id, tenant="a")
            return got if got.status.terminal else None

        done: Execution = await wait_for(ended, timeout=30)
    assert done.status is S.success and done.attempt == 2


async def test_a_job_claimed_by_a_worker_that_lost_it_runs_again_soon(
    store: RunStore, worker: WakingWorker, redis: Redis
) -> None:
    # Regression: a worker that claimed a job and then lost it (it died, or Redis went away before
    # our start transition) left arq's in-progress claim behind; the sweep's enqueue was a no-op
    # and the run stayed queued until arq's job timeout (minutes).
    run = await store.create(tenant="a", flow_id="echo", input_json='{"text":"x"}')
    await redis.set(f"arq:in-progress:{job_id(run.id, 1)}", b"1", px=600_000)

    async def ended() -> bool:
        return (await store.get(run.id, tenant="a")).status is S.success

    await wait_for(ended, timeout=15)
