"""Reaper: what happens to a run whose worker was lost, and to attempts written but never started.

Every worker sweeps; transitions are compare-and-set, so concurrent sweeps are harmless. The
policy for a lost attempt is here: retry it as the next attempt (its steps start over; usage and
cost stay, as the lost attempt really spent them), or after ``ORCH_MAX_ATTEMPTS`` end the run
``failed`` with code ``worker_lost``, keeping its partial output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from orchestrator.models import ExecutionError, ExecutionStatus
from orchestrator.runs.jobs import enqueue_run
from orchestrator.runs.plans import next_attempt_plan, terminal_plan
from orchestrator.runs.states import advance
from orchestrator.runs.store import RunStore
from orchestrator.runs.stored import Stored
from orchestrator.runs.transition import Plan
from webhooks.metrics import MetricsBuffer

logger = logging.getLogger(__name__)

S = ExecutionStatus


@dataclass
class SweepResult:
    """What one sweep did."""

    retried: int = 0
    lost: int = 0
    requeued: int = 0


def lost_attempt_plan(stored: Stored, *, now: datetime, max_attempts: int, requeue_ms: int) -> Plan | None:
    """The transition for a run whose current attempt lost its worker; None if it is not running.

    Attempts a stopping worker handed back do not count toward `max_attempts`.
    """
    run = stored.run
    if run.status is not S.running:
        return None
    if run.attempt - stored.handbacks >= max_attempts:
        error = ExecutionError(
            code="worker_lost",
            message=f"the worker running attempt {run.attempt} stopped responding",
            details={"attempts": run.attempt},
        )
        return terminal_plan(advance(run, S.failed, now=now, output=stored.partial, error=error))
    return next_attempt_plan(run, now=now, requeue_ms=requeue_ms)


async def sweep(
    store: RunStore, pool: Redis, *, max_attempts: int, queue_name: str, metrics: MetricsBuffer | None = None
) -> SweepResult:
    """Reap expired leases, then re-enqueue attempts that should have started by now."""
    result = SweepResult()
    for run_id in await store.leases.expired():
        run = await store.take_over(
            run_id,
            lambda stored, now: lost_attempt_plan(
                stored, now=now, max_attempts=max_attempts, requeue_ms=store.requeue_ms
            ),
        )
        if run is None:
            continue
        outcome = "worker_lost" if run.status is S.failed else "retried"
        if metrics is not None:
            metrics.inc("orch_reaped_total", {"outcome": outcome})
        if run.status is S.failed:
            result.lost += 1
            logger.warning("run %s failed: worker lost on attempt %d", run_id, run.attempt)
        else:
            result.retried += 1
            logger.warning("run %s re-queued as attempt %d after its worker was lost", run_id, run.attempt)
    for run_id in await store.leases.due_pending():
        stored = await store.load(run_id)
        if stored is None or stored.run.status.terminal:
            await store.leases.drop_pending(run_id)
            continue
        if stored.run.status is S.running and await store.leases.held(run_id):
            await store.leases.drop_pending(run_id)
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
        await store.leases.postpone_pending(run_id)
    return result
