"""Runner: executes one attempt of a run inside a worker, from its start transition to its end.

The flow call runs in its isolation (``worker.isolation``, ``worker.processes``), which ends it at
its deadline or when it is stopped from outside: the run was cancelled or taken over (a published
notice), this worker lost the lease (the liveness thread says so), or the worker is stopping and
hands the attempt back. Whatever the call hands back is checked before it reaches Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from orchestrator.context import RunContext
from orchestrator.errors import InvalidTransition, StaleAttempt
from orchestrator.flows import Isolation, Registry
from orchestrator.models import ExecutionError, ExecutionStatus
from orchestrator.runs.notices import Notice
from orchestrator.runs.store import RunStore
from orchestrator.runs.stored import Stored
from orchestrator.worker.channels import LoopChannel, Reporter, ThreadChannel
from orchestrator.worker.isolation import Call, Executor, Stop, Stopped
from orchestrator.worker.liveness import Held, Liveness
from orchestrator.worker.outcomes import Outcome, invalid_output
from webhooks.errors import field_errors
from webhooks.metrics import MetricsBuffer

logger = logging.getLogger(__name__)

S = ExecutionStatus
HANDBACK = "handback"


@dataclass
class _Active:
    attempt: int
    stop: Stop


class Runner:
    """Runs attempts for one worker process; tracks them so they can be stopped from outside."""

    def __init__(
        self,
        store: RunStore,
        registry: Registry,
        *,
        executors: dict[Isolation, Executor],
        liveness: Liveness | None = None,
        metrics: MetricsBuffer | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.executors = executors
        self.liveness = liveness
        self.metrics = metrics
        self.active: dict[str, _Active] = {}

    async def execute(self, run_id: str, attempt: int) -> str:
        """Run `attempt` of `run_id` to its end and record the outcome; return what happened."""
        try:
            began = time.perf_counter()
            stored = await self.store.start(run_id, attempt)
        except StaleAttempt:
            logger.info("run %s attempt %d is not current; skipped", run_id, attempt)
            return "stale"
        run = stored.run
        if self.metrics is not None:
            self.metrics.observe("orch_transition_seconds", time.perf_counter() - began, {"to": "running"})
            waited = (stored.run.started_at or run.created_at) - run.created_at
            self.metrics.observe("orch_queue_wait_seconds", waited.total_seconds(), {"flow": run.flow_id})
        loop = asyncio.get_running_loop()
        reporter = Reporter(self.store, run_id=run_id, attempt=attempt, known=stored)
        flow = self.registry.get(run.flow_id)
        channel = ThreadChannel(reporter, loop) if flow is not None and flow.isolation == "thread" else None
        ctx = RunContext(
            run_id=run_id,
            flow_id=run.flow_id,
            attempt=attempt,
            trace_id=run.trace_id,
            metadata=run.metadata,
            metrics=run.metrics,
            channel=channel or LoopChannel(reporter),
        )
        if flow is None:
            error = ExecutionError(code="flow_not_found", message=f"no worker serves flow {run.flow_id!r}")
            return await self._finish(ctx, reporter, Outcome(S.failed, error=error))
        try:
            data = flow.input_adapter.validate_json(stored.input_json or "null")
        except ValidationError as exc:
            error = ExecutionError(
                code="invalid_input",
                message="the stored input no longer matches the flow's input type",
                details={"fields": field_errors(exc, prefix="input")},
            )
            return await self._finish(ctx, reporter, Outcome(S.failed, error=error))
        active = _Active(attempt, Stop())
        self.active[run_id] = active
        if self.liveness is not None:
            self.liveness.hold(Held(run_id, attempt, flow, deadline=time.monotonic() + flow.timeout))
        call = Call(
            flow=flow,
            run_id=run_id,
            attempt=attempt,
            ctx=ctx,
            data=data,
            input_json=stored.input_json or "null",
            reporter=reporter,
            stop=active.stop,
            deadline=loop.time() + flow.timeout,
        )
        try:
            ended = await self.executors[flow.isolation].run(call)
        finally:
            # Only our own entry: a newer attempt of the same run may have registered meanwhile
            # (this one was lost and is still unwinding), and it must stay tracked.
            if self.active.get(run_id) is active:
                del self.active[run_id]
            if self.liveness is not None:
                self.liveness.release(run_id, attempt)
        if isinstance(ended, Stopped):
            return await self._stopped(stored, ended.reason)
        outcome = ended
        if ctx.invalid is not None:
            outcome = invalid_output(ctx.invalid)
        return await self._finish(ctx, reporter, outcome)

    async def _stopped(self, stored: Stored, reason: str) -> str:
        run = stored.run
        if reason != HANDBACK:
            logger.info("run %s attempt %d stopped: %s", run.id, run.attempt, reason)
            return reason
        try:
            handed = await self.store.hand_back(run.id, run.attempt)
        except (StaleAttempt, InvalidTransition) as exc:
            logger.info("run %s attempt %d could not be handed back: %s", run.id, run.attempt, exc)
            return "superseded"
        if handed is not None:
            logger.info("run %s handed back as attempt %d (the worker is stopping)", run.id, handed.attempt)
        return HANDBACK

    async def _finish(self, ctx: RunContext, reporter: Reporter, outcome: Outcome) -> str:
        await reporter.flush()
        began = time.perf_counter()
        output: Any = outcome.output if outcome.status is S.success else ctx.partial
        try:
            await self.store.finish(
                ctx.run_id,
                ctx.attempt,
                outcome.status,
                output=output,
                error=outcome.error,
                metrics=ctx.metrics,
                known=reporter.known,
            )
        except (StaleAttempt, InvalidTransition) as exc:
            # Someone else ended or took over the run first (a cancel, a reaper): theirs stands.
            logger.info(
                "run %s attempt %d could not end %s: %s", ctx.run_id, ctx.attempt, outcome.status.value, exc
            )
            return "superseded"
        if self.metrics is not None:
            labels = {"flow": ctx.flow_id, "status": outcome.status.value}
            self.metrics.observe(
                "orch_transition_seconds", time.perf_counter() - began, {"to": outcome.status.value}
            )
            self.metrics.inc("orch_runs_finished_total", labels)
        return outcome.status.value

    def on_notice(self, notice: Notice) -> None:
        """React to a published transition: stop our attempt if the run ended or moved on."""
        active = self.active.get(notice.run_id)
        if active is None:
            return
        if notice.status.terminal:
            active.stop(notice.status.value)
        elif notice.attempt != active.attempt:
            active.stop("superseded")

    def on_lost(self, run_ids: list[str]) -> None:
        """The heartbeat found these attempts no longer ours: stop them."""
        for run_id in run_ids:
            active = self.active.get(run_id)
            if active is not None:
                active.stop("lost")

    def hand_back_all(self) -> int:
        """Stop every running attempt and hand it back (the worker is stopping); return how many."""
        for active in self.active.values():
            active.stop(HANDBACK)
        return len(self.active)
