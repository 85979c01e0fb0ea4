"""Runner: executes one attempt of a run inside a worker and keeps its lease alive.

The flow runs in a task of its own so that a cancel, a lost lease or the flow's timeout can
interrupt it without touching the arq job that hosts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.context import RunContext, to_jsonable
from orchestrator.errors import FlowError, InvalidTransition, StaleAttempt
from orchestrator.flows import Flow, Registry
from orchestrator.models import ExecutionError, ExecutionStatus
from orchestrator.runs.notices import Notice
from orchestrator.runs.store import RunStore
from webhooks.errors import field_errors
from webhooks.metrics import MetricsBuffer

logger = logging.getLogger(__name__)

S = ExecutionStatus


class _FlowTimedOut(Exception):
    """The flow ran past its own timeout."""


@dataclass
class _Active:
    attempt: int
    task: asyncio.Task[Any] | None = None
    stop_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None and self.task is not None and not self.task.done():
            self.stop_reason = reason
            self.task.cancel()


class Runner:
    """Runs attempts for one worker process; tracks them so they can be stopped from outside."""

    def __init__(self, store: RunStore, registry: Registry, metrics: MetricsBuffer | None = None) -> None:
        self.store = store
        self.registry = registry
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
        flow = self.registry.get(run.flow_id)
        ctx = RunContext(
            store=self.store,
            run_id=run_id,
            flow_id=run.flow_id,
            attempt=attempt,
            trace_id=run.trace_id,
            metadata=run.metadata,
            metrics=run.metrics,
            known=stored,
        )
        if flow is None:
            error = ExecutionError(
                code="flow_not_found", message=f"no worker serves flow {run.flow_id!r}", details={}
            )
            return await self._finish(ctx, S.failed, error=error)
        try:
            data = flow.input_model.model_validate_json(stored.input_json or "null")
        except ValidationError as exc:
            error = ExecutionError(
                code="invalid_input",
                message="the stored input no longer matches the flow's input model",
                details={"fields": field_errors(exc, prefix="input")},
            )
            return await self._finish(ctx, S.failed, error=error)

        active = _Active(attempt)
        self.active[run_id] = active
        active.task = asyncio.get_running_loop().create_task(self._call(flow, ctx, data))
        try:
            result = await active.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if active.stop_reason is not None and current is not None and current.cancelling() == 0:
                logger.info("run %s attempt %d stopped: %s", run_id, attempt, active.stop_reason)
                return active.stop_reason
            raise
        except FlowError as exc:
            error = ExecutionError(code=exc.code, message=exc.message, details=to_jsonable(exc.details))
            return await self._finish(ctx, S.failed, error=error, output=ctx.partial)
        except _FlowTimedOut:
            error = ExecutionError(
                code="timeout",
                message=f"the flow ran longer than its timeout of {flow.timeout:g} s",
                details={"timeout": flow.timeout},
            )
            return await self._finish(ctx, S.failed, error=error, output=ctx.partial)
        except Exception as exc:
            logger.exception("run %s flow %s raised", run_id, run.flow_id)
            error = ExecutionError(
                code="flow_error",
                message=str(exc) or type(exc).__name__,
                details={"type": type(exc).__name__},
            )
            return await self._finish(ctx, S.failed, error=error, output=ctx.partial)
        finally:
            # Only our own entry: a newer attempt of the same run may have registered meanwhile
            # (this one was lost and is still unwinding), and it must stay tracked.
            if self.active.get(run_id) is active:
                del self.active[run_id]
        try:
            output = to_jsonable(flow.output_model.model_validate(result))
        except ValidationError as exc:
            error = ExecutionError(
                code="invalid_output",
                message="the flow returned output that does not match its output model",
                details={"fields": field_errors(exc, prefix="output")},
            )
            return await self._finish(ctx, S.failed, error=error, output=ctx.partial)
        return await self._finish(ctx, S.success, output=output)

    @staticmethod
    async def _call(flow: Flow, ctx: RunContext, data: Any) -> Any:
        try:
            async with asyncio.timeout(flow.timeout) as scope:
                return await flow.fn(ctx, data)
        except TimeoutError:
            if scope.expired():
                raise _FlowTimedOut from None
            raise

    async def _finish(
        self,
        ctx: RunContext,
        status: ExecutionStatus,
        *,
        output: Any = None,
        error: ExecutionError | None = None,
    ) -> str:
        await ctx.flush()
        began = time.perf_counter()
        try:
            await self.store.finish(
                ctx.run_id,
                ctx.attempt,
                status,
                output=output,
                error=error,
                metrics=ctx.metrics,
                known=ctx.known,
            )
        except (StaleAttempt, InvalidTransition) as exc:
            # Someone else ended or took over the run first (a cancel, a reaper): theirs stands.
            logger.info("run %s attempt %d could not end %s: %s", ctx.run_id, ctx.attempt, status.value, exc)
            return "superseded"
        if self.metrics is not None:
            self.metrics.observe("orch_transition_seconds", time.perf_counter() - began, {"to": status.value})
            self.metrics.inc("orch_runs_finished_total", {"flow": ctx.flow_id, "status": status.value})
        return status.value

    def on_notice(self, notice: Notice) -> None:
        """React to a published transition: stop our attempt if the run ended or moved on."""
        active = self.active.get(notice.run_id)
        if active is None:
            return
        if notice.status.terminal:
            active.stop(notice.status.value)
        elif notice.attempt != active.attempt:
            active.stop("superseded")

    async def heartbeat(self) -> None:
        """Renew our leases and stop the attempts that are no longer ours."""
        held = [(rid, a.attempt) for rid, a in self.active.items()]
        for rid in await self.store.leases.heartbeat(held):
            active = self.active.get(rid)
            if active is not None:
                active.stop("lost")
