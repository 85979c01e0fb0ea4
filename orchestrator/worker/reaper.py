"""Reaper: finds runs whose worker died and runs that were written but never started.

Every worker sweeps; the transitions are compare-and-set, so concurrent sweeps are harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from orchestrator.runs.jobs import enqueue_run
from orchestrator.runs.store import RunStore
from webhooks.metrics import MetricsBuffer

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What one sweep did."""

    retried: int = 0
    lost: int = 0
    requeued: int = 0


async def sweep(
    store: RunStore, pool: Redis, *, max_attempts: int, queue_name: str, metrics: MetricsBuffer | None = None
) -> SweepResult:
    """Reap expired leases, then re-enqueue attempts that should have started by now."""
    result = SweepResult()
    for run_id in await store.expired_leases():
        run = await store.reap(run_id, max_attempts=max_attempts)
        if run is None:
            continue
        if run.status is ExecutionStatus.failed:
            result.lost += 1
            if metrics is not None:
                metrics.inc("orch_reaped_total", {"outcome": "worker_lost"})
            logger.warning("run %s failed: worker lost on attempt %d", run_id, run.attempt)
        else:
            result.retried += 1
            if metrics is not None:
                metrics.inc("orch_reaped_total", {"outcome": "retried"})
            logger.warning("run %s re-queued as attempt %d after its worker was lost", run_id, run.attempt)
    for run_id in await store.due_pending():
        stored = await store.load(run_id)
        if stored is None or stored.run.status.terminal:
            await store.drop_pending(run_id)
            continue
        if (
            stored.run.status is ExecutionStatus.running
            and await pool.zscore(keys.LEASES, run_id) is not None
        ):
            await store.drop_pending(run_id)
            continue
        created = await enqueue_run(pool, run_id, stored.run.attempt, queue_name=queue_name)
        result.requeued += 1
        logger.warning(
            "run %s attempt %d had not started after %.0fs; its job was %s",
            run_id,
            stored.run.attempt,
            store.requeue_ms / 1000,
            "created" if created else "released again",
        )
        await store.postpone_pending(run_id)
    return result
