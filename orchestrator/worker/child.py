"""What runs inside a ``process``-isolation child: its start-up, and one attempt's flow call.

A child imports the flow modules once (``init``), then runs attempts one after another
(``run_attempt``). Its ``ctx`` calls travel to the parent worker over a queue shared by every
child, tagged with the attempt's token; the call's outcome (already checked, plain data) comes back
as the function's return value. The child never talks to Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable
from multiprocessing.queues import Queue
from typing import Any

from orchestrator.context import DONE, RunContext
from orchestrator.flows import Registry, load_registry
from orchestrator.models import Metrics
from orchestrator.worker.outcomes import Outcome, invalid_output, raised, returned

logger = logging.getLogger(__name__)

_queue: Queue[tuple[Any, ...]] | None = None
_registry: Registry | None = None


def init(modules: list[str], path: list[str], queue: Queue[tuple[Any, ...]], level: str, fmt: str) -> None:
    """Prepare a new child: the parent's import path, logging, and the flows."""
    global _queue, _registry
    # The parent handles Ctrl-C and deploys; a child ends when its parent ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path[:] = path
    from orchestrator.logs import configure

    configure(level=level, fmt=fmt)
    _queue = queue
    _registry = load_registry(modules)


class ChildChannel:
    """A child's end of the context channel: each call is a message to the parent."""

    def __init__(self, token: str) -> None:
        self.token = token

    def progress(self, metrics: Metrics) -> Awaitable[None]:
        """Send the step (the parent records it in order)."""
        _send("step", self.token, metrics.model_dump())
        return DONE

    def partial(self, text: str) -> None:
        """Send the newest partial output."""
        _send("partial", self.token, text)


def _send(*message: Any) -> None:
    assert _queue is not None, "child.init did not run"
    _queue.put(message)


def run_attempt(
    flow_id: str,
    token: str,
    run_id: str,
    attempt: int,
    trace_id: str,
    metadata: dict[str, Any],
    metrics: dict[str, Any],
    input_json: str,
) -> dict[str, Any]:
    """Run one attempt of `flow_id` here; return its outcome, final metrics and partial output."""
    _send("start", token, os.getpid())
    try:
        assert _registry is not None, "child.init did not run"
        flow = _registry.get(flow_id)
        if flow is None:
            raise LookupError(f"flow {flow_id!r} is not registered in the worker's child process")
        data = flow.input_adapter.validate_json(input_json)
        ctx = RunContext(
            run_id=run_id,
            flow_id=flow_id,
            attempt=attempt,
            trace_id=trace_id,
            metadata=metadata,
            metrics=Metrics.model_validate(metrics),
            channel=ChildChannel(token),
        )
        outcome: Outcome
        try:
            value = asyncio.run(flow.fn(ctx, data)) if flow.is_async else flow.fn(ctx, data)
        except BaseException as exc:  # a boundary: whatever the flow raised is its outcome
            outcome = raised(flow, exc, run_id=run_id)
        else:
            outcome = returned(flow, value)
        if ctx.invalid is not None:
            outcome = invalid_output(ctx.invalid)
        return {
            "status": outcome.status.value,
            "output": outcome.output,
            "error": outcome.error.model_dump() if outcome.error is not None else None,
            "metrics": ctx.metrics.model_dump(),
            "partial": ctx.partial,
        }
    finally:
        _send("end", token)
