"""Running one attempt's flow call in its isolation, with a hard end at its deadline or on a stop.

``async``: a task on the worker's loop; at the deadline or a stop it is cancelled, and if it
ignores the cancellation for ``GRACE_SECONDS`` it is abandoned. ``thread``: a thread of its own
(an ``async def`` gets a loop of its own there); at the deadline or a stop the attempt ends at once
and the thread is abandoned (Python cannot kill a thread; its context refuses every later call, so
it stops at its next ``ctx`` call, and the count of abandoned threads is a metric). ``process``:
see ``worker.processes``. In every mode the run's outcome is decided on time; what an abandoned
call does afterwards no longer counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.context import RunContext
from orchestrator.flows import Flow
from orchestrator.worker.channels import Reporter
from orchestrator.worker.outcomes import FlowExit, Outcome, raised, returned, timed_out
from webhooks.metrics import MetricsBuffer

logger = logging.getLogger(__name__)

# How long a cancelled async flow may take to unwind before it is abandoned.
GRACE_SECONDS = 1.0
TIMEOUT = "timeout"


@dataclass
class Stop:
    """A request, from outside the call, to end it: why (cancelled, superseded, lost, handback...)."""

    reason: str | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, reason: str) -> None:
        """Ask the call to end (the first reason wins)."""
        if self.reason is None:
            self.reason = reason
            self.event.set()


@dataclass
class Call:
    """One attempt's flow call, as an executor gets it."""

    flow: Flow
    run_id: str
    attempt: int
    ctx: RunContext
    data: Any
    input_json: str
    reporter: Reporter
    stop: Stop
    deadline: float  # the loop's clock (monotonic seconds)


@dataclass
class Stopped:
    """The call was stopped from outside: the run is not this attempt's to finish (or is handed back)."""

    reason: str


class Executor(Protocol):
    """Runs calls of one isolation."""

    async def run(self, call: Call) -> Outcome | Stopped:
        """Run `call` to its outcome, or until it is stopped or its deadline passes."""
        ...


async def settle(done: Awaitable[Any], call: Call) -> str | None:
    """Wait for `done`, the call's stop or its deadline: None if `done` finished, else why not."""
    loop = asyncio.get_running_loop()
    future = asyncio.ensure_future(done)
    stopper = loop.create_task(call.stop.event.wait())
    try:
        finished, _ = await asyncio.wait(
            {future, stopper},
            timeout=max(0.0, call.deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        stopper.cancel()
    if future in finished:
        return None
    return call.stop.reason or TIMEOUT


def ended_by(call: Call, why: str) -> Outcome | Stopped:
    """The outcome of a call that did not finish by itself."""
    return timed_out(call.flow) if why == TIMEOUT else Stopped(why)


class AbandonCount:
    """Calls left running after their attempt ended, counted for ``/metrics``."""

    def __init__(self, metrics: MetricsBuffer | None) -> None:
        self.metrics = metrics
        self.threads: list[threading.Thread] = []

    def add(self, call: Call, what: str, thread: threading.Thread | None = None) -> None:
        """Count one abandoned call and say so in the log."""
        logger.warning(
            "run %s attempt %d: flow %s (%s) did not stop when its attempt ended; abandoned",
            call.run_id,
            call.attempt,
            call.flow.id,
            what,
        )
        if self.metrics is not None:
            self.metrics.inc("orch_abandoned_total", {"isolation": call.flow.isolation})
        if thread is not None:
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)

    @property
    def alive_threads(self) -> int:
        """Abandoned threads still running in this process."""
        return sum(t.is_alive() for t in self.threads)


class AsyncExecutor:
    """``async`` isolation: the flow is a task on the worker's own loop."""

    def __init__(self, abandoned: AbandonCount) -> None:
        self.abandoned = abandoned

    async def run(self, call: Call) -> Outcome | Stopped:
        """Run the coroutine; cancel it at the deadline or on a stop."""
        task = asyncio.get_running_loop().create_task(_contained(call.flow.fn(call.ctx, call.data)))
        try:
            why = await settle(task, call)
        except asyncio.CancelledError:
            call.ctx.close("the worker stopped")
            task.cancel()
            raise
        if why is None:
            return _result(call, task)
        call.ctx.close(why)
        task.cancel()
        finished, _ = await asyncio.wait({task}, timeout=GRACE_SECONDS)
        if finished:
            with contextlib.suppress(BaseException):
                task.result()  # retrieved, so it is never reported as lost
        else:
            self.abandoned.add(call, "it ignored the cancellation")
        return ended_by(call, why)


async def _contained(coro: Any) -> Any:
    # asyncio lets SystemExit and KeyboardInterrupt out of a task and stops the loop: the whole
    # worker would die, and every retry of the run would kill the next worker too.
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise FlowExit(exc) from None


def _result(call: Call, task: asyncio.Future[Any]) -> Outcome:
    if task.cancelled():
        return raised(call.flow, asyncio.CancelledError(), run_id=call.run_id)
    exc = task.exception()
    return returned(call.flow, task.result()) if exc is None else raised(call.flow, exc, run_id=call.run_id)


class ThreadExecutor:
    """``thread`` isolation: the flow gets a thread of its own (and its own loop if it is async)."""

    def __init__(self, abandoned: AbandonCount) -> None:
        self.abandoned = abandoned

    async def run(self, call: Call) -> Outcome | Stopped:
        """Start the thread; end the attempt at the deadline or on a stop, abandoning the thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        inner = _InnerLoop()

        def deliver(setter: Callable[[Any], None], value: Any) -> None:
            if not future.done():
                setter(value)

        def main() -> None:
            try:
                if call.flow.is_async:
                    value = inner.run(call.flow.fn(call.ctx, call.data))
                else:
                    value = call.flow.fn(call.ctx, call.data)
            except BaseException as exc:  # a boundary: whatever the flow raised is its outcome
                loop.call_soon_threadsafe(deliver, future.set_exception, exc)
            else:
                loop.call_soon_threadsafe(deliver, future.set_result, value)

        thread = threading.Thread(target=main, name=f"flow {call.flow.id} {call.run_id}", daemon=True)
        thread.start()
        try:
            why = await settle(future, call)
        except asyncio.CancelledError:
            call.ctx.close("the worker stopped")
            inner.cancel()
            raise
        if why is None:
            return _result(call, future)
        call.ctx.close(why)
        inner.cancel()
        finished, _ = await asyncio.wait({future}, timeout=0.05)
        if not finished:
            future.cancel()
            self.abandoned.add(call, "a thread cannot be killed", thread)
        return ended_by(call, why)


class _InnerLoop:
    """The event loop of an ``async def`` flow running in its own thread, so it can be cancelled."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._lock = threading.Lock()

    def run(self, coro: Any) -> Any:
        """Run `coro` to completion on a new loop in this thread."""
        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            task = loop.create_task(coro)
            with self._lock:
                self._loop, self._task = loop, task
            return runner.run(_await(task))

    def cancel(self) -> None:
        """Cancel the coroutine from another thread (it sees CancelledError at its next await)."""
        with self._lock:
            if self._loop is not None and self._task is not None and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._task.cancel)


async def _await(task: asyncio.Task[Any]) -> Any:
    return await task
