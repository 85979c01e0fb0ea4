"""Liveness from outside the event loop: heartbeats, the stall watchdog, and the deadline backstop.

DESIGN.md "Executing flows that are not polite": the loop that runs flows is never the one that
proves the worker alive. A thread with its own Redis connection renews the leases of every attempt
this process holds, so a flow that blocks the loop (a blocking call inside an ``async def``) never
makes a healthy attempt look dead and it is never run twice while this process lives. The same
thread watches the loop: when it has not ticked for ``stall_seconds`` it logs a warning naming the
async flows on it and where the loop is stuck; and an attempt still running past its deadline
while the loop is stuck is ended ``failed``/``timeout`` from here, so its outcome comes on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis as sync_redis

from orchestrator.flows import Flow
from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from orchestrator.runs.leases import HEARTBEAT, PRESENT, decode_ids, heartbeat_args
from orchestrator.runs.plans import terminal_plan
from orchestrator.runs.states import advance
from orchestrator.runs.stored import READ_RUN, STORED_FIELDS, parse_stored
from orchestrator.runs.transition import COMMITTED, TRANSITION, inputs, log_commit
from orchestrator.worker.outcomes import timed_out
from webhooks.errors import NotReplicated
from webhooks.replication import Replication

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.25
# How long past its deadline an attempt on a stuck loop is left before this thread ends it.
BACKSTOP_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class Held:
    """An attempt this process is running."""

    run_id: str
    attempt: int
    flow: Flow
    deadline: float  # time.monotonic()


class Liveness:
    """The thread; ``hold``/``release`` are called from the loop, everything else runs on the thread."""

    def __init__(
        self,
        *,
        connect: Callable[[], sync_redis.Redis],
        lease_ms: int,
        heartbeat_seconds: float,
        queue_name: str,
        retention_ms: int,
        clock: Callable[[], Any],
        on_lost: Callable[[list[str]], None],
        stall_seconds: float = 1.0,
        worker_id: str = "",
        replication: Replication | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.connect = connect  # on this thread, its own connection (it follows a failover too)
        self.replication = replication or Replication()
        self.lease_ms = lease_ms
        self.heartbeat_seconds = heartbeat_seconds
        self.queue_name = queue_name
        self.retention_ms = retention_ms
        self.clock = clock
        self.on_lost = on_lost
        self.stall_seconds = stall_seconds
        self.last_tick = time.monotonic()
        self.stalls = 0
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._ticker: asyncio.TimerHandle | None = None

    # ----- the loop's side --------------------------------------------------------------------

    def start(self) -> None:
        """Start ticking on the running loop and start the thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(target=self._main, name="liveness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it ends within one beat) and the ticks."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.cancel()

    def _tick(self) -> None:
        self.last_tick = time.monotonic()
        assert self._loop is not None
        self._ticker = self._loop.call_later(TICK_SECONDS, self._tick)

    def hold(self, held: Held) -> None:
        """Renew this attempt's lease from now on."""
        with self._lock:
            self._held[held.run_id] = held

    def release(self, run_id: str, attempt: int) -> None:
        """Stop renewing the lease of `attempt` (only that attempt: a newer one may be held)."""
        with self._lock:
            current = self._held.get(run_id)
            if current is not None and current.attempt == attempt:
                del self._held[run_id]

    def held(self) -> list[Held]:
        """The attempts held now."""
        with self._lock:
            return list(self._held.values())

    # ----- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        client = self.connect()
        heartbeat = client.register_script(HEARTBEAT)
        transition = client.register_script(TRANSITION)
        present = client.register_script(PRESENT)
        next_beat = 0.0
        warned_at = 0.0
        try:
            while not self._stop.wait(TICK_SECONDS):
                now = time.monotonic()
                stalled = now - self.last_tick
                if stalled > self.stall_seconds:
                    if now - warned_at > 5.0:
                        warned_at = now
                        self.stalls += 1
                        self._warn_stall(stalled)
                    self._backstop(transition, now)
                if now >= next_beat:
                    next_beat = now + self.heartbeat_seconds
                    self._beat(heartbeat)
                    self._present(present)
        finally:
            with contextlib.suppress(Exception):
                client.zrem(keys.WORKERS, self.worker_id)
            client.close()

    def _present(self, script: Any) -> None:
        """Say this worker is alive (``orch:workers``), and forget workers that stopped saying so."""
        if not self.worker_id:
            return
        with contextlib.suppress(Exception):  # best effort: the books, not liveness, depend on Redis
            script(keys=[keys.WORKERS], args=[self.worker_id, int(self.heartbeat_seconds * 3000)])

    def _beat(self, script: Any) -> None:
        held = self.held()
        if not held:
            return
        try:
            lost = decode_ids(
                script(
                    keys=[keys.LEASES],
                    args=heartbeat_args([(h.run_id, h.attempt) for h in held], lease_ms=self.lease_ms),
                )
            )
        except Exception as exc:  # Redis away: the next beat tries again (a lease outlives a few)
            logger.warning("heartbeat failed (%s); retrying", exc)
            return
        if lost and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_lost, lost)

    def _warn_stall(self, seconds: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        where = "".join(traceback.format_stack(frame, limit=3)).strip() if frame is not None else "?"
        flows = sorted({f"{h.flow.id} (run {h.run_id})" for h in self.held() if h.flow.isolation == "async"})
        logger.warning(
            "the worker's event loop has been blocked for %.1f s; async flows on it: %s. A flow that "
            "blocks (time.sleep, CPU work, blocking I/O inside async def) stalls every run on this "
            "worker: give it isolation='thread' or 'process'. The loop is at:\n%s",
            seconds,
            ", ".join(flows) or "none",
            where,
        )

    def _backstop(self, script: Any, now: float) -> None:
        for held in self.held():
            if now > held.deadline + BACKSTOP_GRACE_SECONDS:
                try:
                    self._expire(script, held)
                except Exception as exc:
                    logger.warning("run %s: could not end the overdue attempt (%s)", held.run_id, exc)
                self.release(held.run_id, held.attempt)

    def _expire(self, script: Any, held: Held) -> None:
        """End an overdue attempt ``failed``/``timeout`` with this thread's own connection."""
        client: sync_redis.Redis = script.registered_client
        for _ in range(10):
            stored = parse_stored(
                client.eval(READ_RUN, 2, keys.run(held.run_id), keys.run_events(held.run_id), *STORED_FIELDS)
            )
            if (
                stored is None
                or stored.run.attempt != held.attempt
                or stored.run.status is not ExecutionStatus.running
            ):
                return
            now = self.clock()
            run = advance(
                stored.run,
                ExecutionStatus.failed,
                now=now,
                output=stored.partial,
                error=timed_out(held.flow).error,
            )
            plan = terminal_plan(run)
            key_list, args = inputs(
                plan,
                queue_name=self.queue_name,
                retention_ms=self.retention_ms,
                tenant=stored.tenant,
                now=now,
                prev_sequence=stored.run.sequence,
                prev_status=stored.run.status,
                hook=stored.hook,
            )
            if int(script(keys=key_list, args=args)) == COMMITTED:
                log_commit(plan)
                try:
                    self.replication.fence_sync(client, what=f"run {held.run_id} timeout")
                except NotReplicated as exc:  # it stands on the primary; a lost one is reaped later
                    logger.warning("%s", exc.message)
                logger.warning(
                    "run %s attempt %d ended timeout from the liveness thread (the event loop is blocked)",
                    held.run_id,
                    held.attempt,
                )
                return
