"""The worker's side of a flow's RunContext: one Reporter per attempt, and the channels that reach it.

A Reporter lives on the worker's event loop and writes an attempt's progress in order and its newest
partial output (one writer at a time, newest value wins). A flow reaches it through the channel of
its isolation: directly on the loop (``async``), from its own thread (``thread``), or through the
parent end of a child process's queue (``process``, see ``worker.processes``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable

from orchestrator.context import DONE, AttemptOver
from orchestrator.errors import InvalidTransition, StaleAttempt
from orchestrator.models import Metrics
from orchestrator.runs.store import RunStore
from orchestrator.runs.stored import Stored

logger = logging.getLogger(__name__)

# How long a flow thread waits for its step to be recorded before giving up on it.
STEP_WAIT_SECONDS = 30.0


class Reporter:
    """Writes one attempt's progress and partial output, from the worker's event loop."""

    def __init__(self, store: RunStore, *, run_id: str, attempt: int, known: Stored) -> None:
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.known = known
        self.metrics: Metrics = known.run.metrics
        self.ended = asyncio.Event()  # a child process said it sent everything
        self._lock = asyncio.Lock()
        self._newest: str | None = None
        self._writer: asyncio.Task[None] | None = None

    async def progress(self, metrics: Metrics) -> None:
        """Record `metrics` (after the partial output written so far); AttemptOver if superseded."""
        self.metrics = metrics
        await self.flush()
        async with self._lock:
            try:
                await self.store.progress(self.run_id, self.attempt, metrics, known=self.known)
            except (StaleAttempt, InvalidTransition) as exc:
                raise AttemptOver(f"run {self.run_id} moved on: {exc}") from None

    def partial(self, text: str) -> None:
        """Keep `text` as the partial output; saves never land out of order."""
        self._newest = text
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._newest is not None:
            text, self._newest = self._newest, None
            try:
                await self.store.save_partial(self.run_id, self.attempt, text)
            except Exception:
                logger.warning("run %s could not save its partial output", self.run_id, exc_info=True)

    async def flush(self) -> None:
        """Wait until the newest partial output has reached Redis."""
        if self._writer is not None:
            await self._writer


class LoopChannel:
    """An ``async`` flow's channel: the flow runs on the worker's loop itself."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def progress(self, metrics: Metrics) -> Awaitable[None]:
        """A coroutine that records the step (the flow awaits it)."""
        return self.reporter.progress(metrics)

    def partial(self, text: str) -> None:
        """Hand the partial output to the reporter."""
        self.reporter.partial(text)


class ThreadChannel:
    """A ``thread`` flow's channel: calls cross into the worker's loop and wait for their result there."""

    def __init__(self, reporter: Reporter, loop: asyncio.AbstractEventLoop) -> None:
        self.reporter = reporter
        self.loop = loop

    def progress(self, metrics: Metrics) -> Awaitable[None]:
        """Record the step before returning (blocking this thread only)."""
        future = asyncio.run_coroutine_threadsafe(self.reporter.progress(metrics), self.loop)
        try:
            future.result(STEP_WAIT_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            logger.warning("run %s: a step was not recorded in %gs", self.reporter.run_id, STEP_WAIT_SECONDS)
        return DONE

    def partial(self, text: str) -> None:
        """Hand the partial output to the reporter on the loop."""
        self.loop.call_soon_threadsafe(self.reporter.partial, text)
