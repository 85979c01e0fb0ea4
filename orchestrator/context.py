"""RunContext: what a flow sees of its execution (steps, usage, partial output, trace id, logger)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from orchestrator.models import Metrics

if TYPE_CHECKING:
    from orchestrator.runs.store import RunStore, Stored

logger = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """Turn pydantic models (at any depth) into plain JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class RunContext:
    """Handed to a flow as its first argument; reports progress and usage of one attempt."""

    def __init__(
        self,
        *,
        store: RunStore,
        run_id: str,
        flow_id: str,
        attempt: int,
        trace_id: str,
        metadata: dict[str, Any],
        metrics: Metrics,
        known: Stored | None = None,
    ) -> None:
        self.run_id = run_id
        self.flow_id = flow_id
        self.attempt = attempt
        self.trace_id = trace_id
        self.metadata = metadata
        self.metrics = metrics.model_copy()
        self.partial: Any = None
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"orchestrator.flow.{flow_id}"),
            {"run_id": run_id, "attempt": attempt, "trace_id": trace_id},
        )
        self._store = store
        # The run as of this attempt's last write: lets progress skip a read (compare-and-set keeps it safe).
        self.known = known
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None

    async def step(self, name: str = "") -> None:
        """Count one finished step (``stepsRun`` + 1) and publish ``execution.progress``."""
        self.metrics = self.metrics.model_copy(update={"steps_run": self.metrics.steps_run + 1})
        self.logger.info("run %s step %d %s", self.run_id, self.metrics.steps_run, name)
        await self.flush()
        await self._store.progress(self.run_id, self.attempt, self.metrics, known=self.known)

    def add_usage(self, *, tokens: int = 0, cost: float = 0.0) -> None:
        """Add token usage and cost to the execution's metrics (sent with the next step or the end)."""
        if tokens < 0 or cost < 0:
            raise ValueError("usage cannot be negative")
        self.metrics = self.metrics.model_copy(
            update={"tokens_used": self.metrics.tokens_used + tokens, "cost": self.metrics.cost + cost}
        )

    def set_partial(self, value: Any) -> None:
        """Keep `value` as the output to report if the execution is cancelled or fails."""
        self.partial = to_jsonable(value)
        self._dirty = True
        # One writer at a time, always sending the newest value, so saves never land out of order.
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._write_partials())

    async def _write_partials(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self._store.save_partial(self.run_id, self.attempt, json.dumps(self.partial))
            except Exception:
                logger.warning("run %s could not save its partial output", self.run_id, exc_info=True)

    async def flush(self) -> None:
        """Wait until the newest partial output has reached Redis."""
        if self._flusher is not None:
            await self._flusher
