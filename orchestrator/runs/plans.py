"""Plans: what each kind of transition commits besides the new execution (pure, no I/O).

The store, the reaper and the worker's liveness thread build their transitions here, so a queued,
retried, handed-back or ended run always carries the same lease, pending and job changes.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from orchestrator import events
from orchestrator.models import Execution, ExecutionStatus, Metrics
from orchestrator.runs.states import advance
from orchestrator.runs.transition import Deadline, Plan
from webhooks.ids import new_id
from webhooks.models import to_ms
from webhooks.outbox import Hook

S = ExecutionStatus


def queued_plan(
    flow_id: str,
    *,
    run_id: str | None,
    input_json: str,
    metadata: dict[str, Any],
    webhook_json: str | None,
    now: datetime,
    steps_total: int | None,
    requeue_ms: int,
) -> Plan:
    """A new run, queued with the job of its first attempt (checked again after `requeue_ms`)."""
    run: Execution[Any] = Execution[Any](
        id=run_id or new_id("exec", now_ms=to_ms(now)),
        flow_id=flow_id,
        status=S.queued,
        created_at=now,
        trace_id=secrets.token_hex(16),
        metadata=metadata,
        metrics=Metrics(steps_total=steps_total),
        attempt=1,
        sequence=1,
    )
    return Plan(
        run=run,
        event_type=events.status_event(S.queued),
        pending=Deadline.after(requeue_ms),
        enqueue_attempt=1,
        input_json=input_json,
        hook=Hook.from_json(webhook_json) if webhook_json else None,
    )


def terminal_plan(run: Execution[Any]) -> Plan:
    """The plan of a transition into a terminal status: no lease, no pending start, retention starts."""
    return Plan(
        run=run,
        event_type=events.status_event(run.status),
        lease=Deadline.CLEAR,
        pending=Deadline.CLEAR,
        retention=True,
    )


def next_attempt_plan(
    run: Execution[Any], *, now: datetime, requeue_ms: int, handbacks: int | None = None
) -> Plan:
    """running -> running as the next attempt, enqueued at once; its steps start over.

    Usage and cost stay, as the previous attempt really spent them. `handbacks` is the run's new
    count of attempts handed back (None: this one was lost, and counts toward the attempt limit).
    """
    metrics = run.metrics.model_copy(update={"steps_run": 0})  # stepsRun never passes stepsTotal
    retried = advance(run, S.running, now=now, attempt=run.attempt + 1, metrics=metrics)
    return Plan(
        run=retried,
        event_type=events.status_event(S.running),
        lease=Deadline.CLEAR,
        pending=Deadline.after(requeue_ms),
        enqueue_attempt=run.attempt + 1,
        handbacks=handbacks,
    )
