"""The execution state machine as data, and the pure function that advances a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orchestrator.errors import InvalidTransition
from orchestrator.models import Execution, ExecutionError, ExecutionStatus, Metrics

S = ExecutionStatus

ALLOWED: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    S.queued: frozenset({S.running, S.cancelled}),
    # running -> running is a retried attempt after its worker was lost.
    S.running: frozenset({S.running, S.success, S.failed, S.cancelled}),
    S.success: frozenset(),
    S.failed: frozenset(),
    S.cancelled: frozenset(),
}


def can_advance(current: ExecutionStatus, target: ExecutionStatus) -> bool:
    """Tell whether the table allows `current` -> `target`."""
    return target in ALLOWED[current]


def advance(
    run: Execution[Any],
    to: ExecutionStatus,
    *,
    now: datetime,
    output: Any = None,
    error: ExecutionError | None = None,
    metrics: Metrics | None = None,
    attempt: int | None = None,
) -> Execution[Any]:
    """Return `run` moved to `to` at `now`, with `sequence` bumped; raise InvalidTransition if illegal."""
    if not can_advance(run.status, to):
        raise InvalidTransition(run.id, run.status.value, to.value)
    update: dict[str, Any] = {"status": to, "sequence": run.sequence + 1}
    if metrics is not None:
        update["metrics"] = metrics
    if attempt is not None:
        update["attempt"] = attempt
    if to is S.running and run.started_at is None:
        update["started_at"] = now
    if to.terminal:
        update["completed_at"] = now
        update["output"] = output
        update["error"] = error
        if run.started_at is not None:
            update["duration"] = max(0, round((now - run.started_at).total_seconds() * 1000))
    return run.model_copy(update=update)
