"""RunContext: what a flow sees of its execution (steps, usage, partial output, trace id, logger).

One class for every isolation. ``step()`` returns an awaitable: an ``async def`` flow writes
``await ctx.step("ocr")``, a plain ``def`` flow ``ctx.step("ocr")`` (in a thread or a child process
the step is recorded before the call returns). Where a call goes is the context's channel: the
worker's event loop, a thread talking to that loop, or a child process's queue to its parent.

Values a flow hands over (partial output, usage) are checked as they arrive (``orchestrator.encoding``):
a value that cannot be stored raises at the call and marks the attempt, which then ends ``failed``
with code ``invalid_output`` whatever the flow does next. Once an attempt has ended (timed out,
cancelled, taken over), every call raises :class:`AttemptOver`, so a flow left running stops at its
next call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Generator
from typing import Any, Protocol

from orchestrator.encoding import InvalidValue, check, shown, to_text
from orchestrator.models import Metrics

logger = logging.getLogger(__name__)

MAX_TOKENS = 2**53  # beyond this a JSON number loses precision in most readers (RFC 8259 section 6)
MAX_COST = 1e15


class AttemptOver(BaseException):  # a signal to unwind, like CancelledError
    """Raised by a context whose attempt has ended; a BaseException so ``except Exception`` lets it pass."""


class Channel(Protocol):
    """Where a context's calls go (see the module docstring)."""

    def progress(self, metrics: Metrics) -> Awaitable[None]:
        """Record `metrics` as an ``execution.progress`` event."""
        ...

    def partial(self, text: str) -> None:
        """Keep `text` (JSON) as the run's partial output (newest wins)."""
        ...


class Done:
    """An awaitable that is already complete: what ``step()`` returns once the step is recorded."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


DONE = Done()


class RunContext:
    """Handed to a flow as its first argument; reports progress and usage of one attempt."""

    def __init__(
        self,
        *,
        run_id: str,
        flow_id: str,
        attempt: int,
        trace_id: str,
        metadata: dict[str, Any],
        metrics: Metrics,
        channel: Channel,
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
        self.invalid: InvalidValue | None = None
        self._channel = channel
        self._over: str | None = None

    def close(self, why: str) -> None:
        """End the attempt for the flow: every later call raises AttemptOver(`why`)."""
        if self._over is None:
            self._over = why

    @property
    def over(self) -> str | None:
        """Why the attempt ended for the flow, or None while it runs."""
        return self._over

    def _check_open(self) -> None:
        if self._over is not None:
            raise AttemptOver(f"attempt {self.attempt} of {self.run_id} is over: {self._over}")

    def _refuse(self, exc: InvalidValue) -> InvalidValue:
        if self.invalid is None:
            self.invalid = exc
        return exc

    def step(self, name: str = "") -> Awaitable[None]:
        """Count one finished step (``stepsRun`` + 1) and publish ``execution.progress``.

        Await it in an ``async def`` flow; in a ``def`` flow the call itself records the step.
        """
        self._check_open()
        try:
            label = check(name, "metrics.lastStep")
            if not isinstance(label, str):
                raise InvalidValue("metrics.lastStep", f"a step name is a string, not {shown(name)}")
        except InvalidValue as exc:
            raise self._refuse(exc) from None
        self.metrics = self.metrics.model_copy(
            update={"steps_run": self.metrics.steps_run + 1, "last_step": label[:200] or None}
        )
        self.logger.info("run %s step %d %s", self.run_id, self.metrics.steps_run, label)
        return self._channel.progress(self.metrics)

    def add_usage(self, *, tokens: int = 0, cost: float = 0.0) -> None:
        """Add token usage and cost to the execution's metrics (sent with the next step or the end).

        Raises ValueError for a negative, non-finite or absurd figure (which also fails the attempt
        with ``invalid_output``: usage is part of what the run reports).
        """
        self._check_open()
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_TOKENS:
            bad = InvalidValue(
                "metrics.tokensUsed", f"tokens must be an integer 0..2^53, not {shown(tokens)}"
            )
            raise self._refuse(bad)
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or not 0 <= cost <= MAX_COST
        ):
            raise self._refuse(
                InvalidValue("metrics.cost", f"cost must be a finite number >= 0, not {shown(cost)}")
            )
        self.metrics = self.metrics.model_copy(
            update={"tokens_used": self.metrics.tokens_used + tokens, "cost": self.metrics.cost + float(cost)}
        )

    def set_partial(self, value: Any) -> None:
        """Keep `value` as the output to report if the execution is cancelled or fails.

        Raises InvalidValue (a ValueError) if `value` cannot be stored as JSON; the attempt then ends
        ``failed`` with code ``invalid_output``.
        """
        self._check_open()
        try:
            data = check(value, "partial")
        except InvalidValue as exc:
            raise self._refuse(exc) from None
        self.partial = data
        self._channel.partial(to_text(data))
