"""``process`` isolation: a pool of pre-started child processes (pebble) that can be killed.

A CPU-bound or stuck flow in a child never stalls the worker. At the flow's deadline, on a cancel or
a take-over, or when the child grows past ``max_memory_mb``, its child is terminated and then killed
(within a second: pebble's term timeout is set to ``KILL_AFTER_SECONDS``) and the pool starts a
replacement. Children are started with ``forkserver`` (never a fork of a worker that holds threads,
connections and an event loop) and import the flow modules once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
import sys
import threading
from multiprocessing.queues import Queue
from typing import Any

import pebble
from pebble.common.types import CONSTS

from orchestrator.context import RunContext
from orchestrator.models import ExecutionError, ExecutionStatus, Metrics
from orchestrator.worker import child
from orchestrator.worker.isolation import TIMEOUT, Call, Stopped, ended_by, settle
from orchestrator.worker.outcomes import Outcome, crashed, out_of_memory

logger = logging.getLogger(__name__)

KILL_AFTER_SECONDS = 0.5  # SIGTERM, then SIGKILL this long after (pebble's default is 3 s)
MEMORY_POLL_SECONDS = 0.1
END_WAIT_SECONDS = 2.0  # for the child's last context messages after its result arrived
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` in MB (Linux /proc), None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 1e6
    except (OSError, ValueError, IndexError):
        return None


class ProcessExecutor:
    """Runs ``process`` calls in a pebble ProcessPool; one instance per worker process."""

    def __init__(self, *, modules: list[str], size: int, log_level: str, log_format: str) -> None:
        self.modules = modules
        self.size = size
        self.log_level = log_level
        self.log_format = log_format
        self.calls: dict[str, Call] = {}
        self.pids: dict[str, int] = {}
        self.used_mb: dict[str, float] = {}
        self._pool: pebble.ProcessPool | None = None
        self._queue: Queue[tuple[Any, ...]] | None = None
        self._pump: threading.Thread | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the children (each imports the flow modules) and the parent's message pump."""
        CONSTS.term_timeout = KILL_AFTER_SECONDS
        context = multiprocessing.get_context("forkserver")
        self._loop = asyncio.get_running_loop()
        self._queue = context.Queue()
        self._pool = pebble.ProcessPool(
            max_workers=self.size,
            initializer=child.init,
            initargs=(self.modules, list(sys.path), self._queue, self.log_level, self.log_format),
            context=context,
        )
        self._pump = threading.Thread(target=self._read, name="process pool messages", daemon=True)
        self._pump.start()
        self._monitor = self._loop.create_task(self._watch_memory())

    async def close(self) -> None:
        """Stop the children (killing any still running) and the pump."""
        if self._monitor is not None:
            self._monitor.cancel()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
            await asyncio.to_thread(pool.join, 5)
        if self._queue is not None:
            self._queue.put(("stop",))
        if self._pump is not None:
            await asyncio.to_thread(self._pump.join, 2)

    def _read(self) -> None:
        """Pump thread: hand every child message to the loop."""
        assert self._queue is not None and self._loop is not None
        while True:
            try:
                message = self._queue.get()
            except (EOFError, OSError):
                return
            if message[0] == "stop":
                return
            with contextlib.suppress(RuntimeError):  # the loop closed on shutdown
                self._loop.call_soon_threadsafe(self._dispatch, message)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind, token = message[0], message[1]
        call = self.calls.get(token)
        if call is None:
            return  # an attempt already ended (a late message of a killed or finished child)
        if kind == "start":
            self.pids[token] = int(message[2])
        elif kind == "step":
            call.ctx.metrics = Metrics.model_validate(message[2])
            task = asyncio.get_running_loop().create_task(call.reporter.progress(call.ctx.metrics))
            task.add_done_callback(_quiet)
        elif kind == "partial":
            # The parent's view, for an attempt that ends without the child's own report (killed).
            call.ctx.partial = json.loads(message[2])
            call.reporter.partial(message[2])
        elif kind == "end":
            call.reporter.ended.set()

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_POLL_SECONDS)
            for token, call in list(self.calls.items()):
                limit = call.flow.max_memory_mb
                pid = self.pids.get(token)
                if limit is None or pid is None:
                    continue
                used = rss_mb(pid)
                if used is not None and used > limit:
                    self.used_mb[token] = used
                    call.stop("out_of_memory")

    async def run(self, call: Call) -> Outcome | Stopped:
        """Run the call in a child; kill the child at the deadline, on a stop, or past its memory."""
        if self._pool is None:
            self.start()
        assert self._pool is not None
        token = f"{call.run_id}:{call.attempt}"
        self.calls[token] = call
        ctx = call.ctx
        future = self._pool.schedule(
            child.run_attempt,
            args=(
                call.flow.id,
                token,
                call.run_id,
                call.attempt,
                ctx.trace_id,
                ctx.metadata,
                ctx.metrics.model_dump(),
                call.input_json,
            ),
        )
        try:
            why = await settle(asyncio.wrap_future(future), call)
            if why is not None:
                future.cancel()  # pebble terminates the child, then kills it
                ctx.close(why)
                if why == "out_of_memory":
                    return out_of_memory(call.flow, self.used_mb.get(token, 0.0))
                return ended_by(call, why)
            try:
                result: dict[str, Any] = future.result()
            except pebble.ProcessExpired as exc:
                return crashed(call.flow, exc.exitcode)
            except concurrent.futures.CancelledError:
                return ended_by(call, call.stop.reason or TIMEOUT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.reporter.ended.wait(), END_WAIT_SECONDS)
            return _outcome(ctx, result)
        except asyncio.CancelledError:
            future.cancel()
            ctx.close("the worker stopped")
            raise
        finally:
            self.calls.pop(token, None)
            self.pids.pop(token, None)
            self.used_mb.pop(token, None)


def _outcome(ctx: RunContext, result: dict[str, Any]) -> Outcome:
    """The child's report, applied to the parent's view of the context (metrics, partial output)."""
    ctx.metrics = Metrics.model_validate(result["metrics"])
    ctx.partial = result["partial"]
    error = result["error"]
    return Outcome(
        ExecutionStatus(result["status"]),
        output=result["output"],
        error=ExecutionError.model_validate(error) if error is not None else None,
    )


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.info("a step of a child process was not recorded: %s", task.exception())
