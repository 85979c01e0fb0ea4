"""The arq worker: the job function, a worker that wakes on enqueue and drains on stop, its loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from signal import Signals
from typing import Any

from arq.connections import ArqRedis, create_pool
from arq.worker import Worker, func
from redis.exceptions import RedisError

from orchestrator.connections import arq_pool, arq_settings, sync_client
from orchestrator.flows import Isolation, Registry
from orchestrator.runs import keys
from orchestrator.runs.jobs import JOB_FUNCTION
from orchestrator.runs.notices import Notice, Subscription
from orchestrator.runs.retention import trim_indexes
from orchestrator.runs.store import RunStore
from orchestrator.settings import Settings
from orchestrator.worker.isolation import AbandonCount, AsyncExecutor, Executor, ThreadExecutor
from orchestrator.worker.liveness import Liveness
from orchestrator.worker.processes import ProcessExecutor
from orchestrator.worker.reaper import sweep
from orchestrator.worker.runner import Runner
from webhooks import RedisClock
from webhooks.metrics import MetricsBuffer

logger = logging.getLogger(__name__)

# arq must never time a job out before the flow's own timeout has been handled.
JOB_TIMEOUT_MARGIN = 30.0


async def execute_run(ctx: dict[str, Any], run_id: str, attempt: int) -> str:
    """arq job: execute one attempt of one run."""
    runner: Runner = ctx["runner"]
    return await runner.execute(run_id, attempt)


class WakingWorker(Worker):
    """An arq worker that wakes on enqueue and stops like a deploy wants.

    arq polls its queue every ``poll_delay``; a run would wait half of that on average before it
    starts. Here the sleep ends as soon as an enqueue is published, and the poll stays as the
    fallback for a missed wake-up.

    Stopping (SIGTERM, or :meth:`request_stop`): take no new runs; let the running attempts finish
    within ``shutdown_grace`` seconds; hand back any still running at the deadline (re-queued at once,
    not counted as lost). A second SIGTERM or SIGINT hands them back at once.
    """

    def __init__(
        self,
        *args: Any,
        shutdown_grace: float = 25.0,
        connect: Callable[..., ArqRedis] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.connect = connect
        self.wake = asyncio.Event()
        self.shutdown_grace = shutdown_grace
        self._stop_requested = False
        self._hurry = asyncio.Event()
        self._signals = 0

    def request_stop(self) -> None:
        """Take no new runs, drain the running ones (see the class docstring), then leave main()."""
        self._stop_requested = True
        self.allow_pick_jobs = False
        self.wake.set()

    def hurry(self) -> None:
        """Hand every running attempt back now instead of waiting for the grace period."""
        self._hurry.set()
        self.request_stop()

    def handle_sig(self, signum: Signals) -> None:
        """SIGTERM/SIGINT: the first drains, the second hands everything back at once."""
        self._signals += 1
        if self._signals == 1:
            logger.info(
                "%s: taking no new runs; %d running get %gs to finish, then are handed back",
                Signals(signum).name,
                sum(not t.done() for t in self.tasks.values()),
                self.shutdown_grace,
            )
            self.request_stop()
        else:
            logger.info("%s again: handing back every running attempt now", Signals(signum).name)
            self.hurry()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self.wake.set()  # a slot is free: look at the queue again now

    async def main(self) -> None:
        """arq's main loop with an interruptible poll sleep, then the drain."""
        if self._pool is None:
            options: dict[str, Any] = {
                "job_deserializer": self.job_deserializer,
                "job_serializer": self.job_serializer,
                "default_queue_name": self.queue_name,
                "expires_extra_ms": self.expires_extra_ms,
            }
            if self.connect is None:
                self._pool = await create_pool(self.redis_settings, **options)
            else:  # ours: it follows a Sentinel failover, with the Sentinels' password and TLS
                self._pool = await self._connected(self.connect(**options))
        logger.info("worker starting for %s", ", ".join(self.functions))
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        outage = 0.0
        while not self._stop_requested:
            self.wake.clear()
            try:
                await self._poll_iteration()
            except (RedisError, OSError) as exc:  # incl. WatchError raised for a lost connection
                # Redis is down or restarting: keep the process, retry with backoff (arq would exit).
                outage = min(max(outage * 2, 0.1), 5.0)
                logger.warning("worker cannot reach Redis (%s); retrying in %.1fs", exc, outage)
                await asyncio.sleep(outage)
                continue
            outage = 0.0
            if self.burst:
                if 0 <= self.max_burst_jobs <= self._jobs_started():
                    await asyncio.gather(*self.tasks.values())
                    return
                if await self.pool.zcard(self.queue_name) == 0:
                    await asyncio.gather(*self.tasks.values())
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_delay_s)
        await self._drain()

    async def _connected(self, pool: ArqRedis, tries: int = 5) -> ArqRedis:
        """`pool` once it answers PING, retrying as arq's own pool does (then the error is raised)."""
        for n in range(tries):
            try:
                await pool.ping()
                return pool
            except (RedisError, OSError) as exc:
                if n == tries - 1:
                    await pool.aclose()
                    raise
                logger.warning("worker cannot reach Redis (%s); %d more tries", exc, tries - 1 - n)
                await asyncio.sleep(1.0)
        return pool

    async def _drain(self) -> None:
        running = [t for t in self.tasks.values() if not t.done()]
        if not running:
            return
        everything: asyncio.Future[Any] = asyncio.gather(*running, return_exceptions=True)
        hurry: asyncio.Future[Any] = asyncio.get_running_loop().create_task(self._hurry.wait())
        await asyncio.wait(
            {everything, hurry}, timeout=self.shutdown_grace, return_when=asyncio.FIRST_COMPLETED
        )
        hurry.cancel()
        if everything.done():
            return
        runner: Runner | None = self.ctx.get("runner")
        handed = runner.hand_back_all() if runner is not None else 0
        logger.info("handing back %d running attempts", handed)
        await asyncio.wait({everything}, timeout=10.0)


async def _every(
    seconds: float, what: str, action: Callable[[], Awaitable[object]], stop: asyncio.Event
) -> None:
    """Run `action` every `seconds` until `stop` is set; it is never interrupted half-way."""
    while not stop.is_set():
        try:
            await action()
        except Exception:
            logger.warning("%s failed; retrying in %.1fs", what, seconds, exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def _wake_on_enqueue(worker: WakingWorker, pool: ArqRedis, stop: asyncio.Event) -> None:
    """Take one wake-up token per enqueue (BLPOP) while this worker has room for a run.

    One enqueue wakes one idle worker, not all of them (no thundering herd on arq's queue); a worker
    with no free slot leaves the token to the others. arq's poll stays as the fallback.
    """
    delay = 0.1
    while not stop.is_set():
        if not worker.allow_pick_jobs:
            return  # stopping (a drain): no run will be taken again
        if worker.job_counter >= worker.max_jobs:
            # Full: leave the tokens to the others. Not a wait on `worker.wake`, which stays set
            # once main() leaves its loop (waiting on it then returned at once: a busy loop).
            await asyncio.sleep(0.05)
            continue
        try:
            if await pool.blpop([keys.WAKE_LIST], timeout=1):
                worker.wake.set()
            delay = 0.1
        except (RedisError, OSError) as exc:
            logger.debug("wake-up list unreachable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _async(action: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        action()

    return run


def build_worker(
    settings: Settings, registry: Registry, *, burst: bool = False, **overrides: Any
) -> WakingWorker:
    """Build a worker serving `registry` with the tuning in `settings`."""
    tasks: list[asyncio.Task[None]] = []  # loops that stop at their next step
    cancellable: list[asyncio.Task[None]] = []  # waits that are cancelled (a subscription, a BLPOP)
    closers: list[Callable[[], Awaitable[None]]] = []
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    channel = keys.worker_channel(worker_id)
    stop = asyncio.Event()
    clock = RedisClock()
    worker: WakingWorker

    async def startup(ctx: dict[str, Any]) -> None:
        pool: ArqRedis = ctx["redis"]
        store = RunStore(
            pool,
            queue_name=settings.queue_name,
            retention_seconds=settings.run_retention_seconds,
            lease_seconds=settings.lease_seconds,
            requeue_after_seconds=settings.requeue_after_seconds,
            clock=clock.now,
            replication=settings.replication,
            strict=False,  # a shortfall is logged: the worker answers no client (see Transitions)
        )
        metrics = MetricsBuffer(pool)
        await clock.sync(pool)
        abandoned = AbandonCount(metrics)
        executors: dict[Isolation, Executor] = {
            "async": AsyncExecutor(abandoned),
            "thread": ThreadExecutor(abandoned),
        }
        if any(f.isolation == "process" for f in registry.all()):
            # Started now (each child imports the flows once), so a run pays only its messages.
            pool_executor = ProcessExecutor(
                modules=list(settings.flows),
                size=settings.worker_processes or os.cpu_count() or 1,
                log_level=settings.log_level,
                log_format=settings.log_format,
            )
            pool_executor.start()
            executors["process"] = pool_executor
            closers.append(pool_executor.close)
        runner = Runner(store, registry, executors=executors, metrics=metrics, holder=channel)
        liveness = Liveness(
            connect=lambda: sync_client(settings),
            replication=settings.replication,
            lease_ms=store.lease_ms,
            heartbeat_seconds=settings.heartbeat_seconds,
            queue_name=settings.queue_name,
            retention_ms=store.retention_ms,
            clock=store.clock,
            on_lost=runner.on_lost,
            stall_seconds=settings.worker_stall_seconds,
            worker_id=worker_id,
        )
        runner.liveness = liveness
        liveness.start()
        closers.append(_async(liveness.stop))
        ctx["runner"] = runner
        ctx["store"] = store
        loop = asyncio.get_running_loop()

        def on_message(_channel: str, data: bytes) -> None:
            if (notice := Notice.parse(data)) is not None:
                runner.on_notice(notice)

        # This worker's own channel: notices of the runs it holds only (a cancel, a take-over), so
        # a worker's cost per run does not grow with the number of workers. The heartbeat catches
        # a notice missed while reconnecting.
        subscription = Subscription(pool, (channel,), on_message=on_message, name="worker subscription")
        cancellable.append(loop.create_task(subscription.run()))
        cancellable.append(loop.create_task(_wake_on_enqueue(worker, pool, stop)))
        tasks.append(loop.create_task(clock.run(pool, stop)))

        async def sweep_once() -> None:
            await sweep(
                store,
                pool,
                max_attempts=settings.max_attempts,
                queue_name=settings.queue_name,
                metrics=metrics,
            )
            await trim_indexes(pool, retention_seconds=settings.run_retention_seconds)

        tasks.append(loop.create_task(_every(settings.sweep_seconds, "sweep", sweep_once, stop)))
        tasks.append(loop.create_task(metrics.run(stop)))

    async def shutdown(ctx: dict[str, Any]) -> None:
        # Let the loops finish what they are doing (a half-run Redis pipeline leaks its
        # connection), then cancel whatever is still waiting (the subscription).
        stop.set()
        for task in cancellable:
            task.cancel()
        _, late = await asyncio.wait(tasks, timeout=5.0) if tasks else (set(), set())
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, *cancellable, return_exceptions=True)
        tasks.clear()
        cancellable.clear()
        for close in closers:
            await close()
        closers.clear()

    options: dict[str, Any] = {
        "functions": [
            func(execute_run, name=JOB_FUNCTION, timeout=registry.max_timeout + JOB_TIMEOUT_MARGIN)
        ],
        "redis_settings": arq_settings(settings),
        "connect": lambda **options: arq_pool(settings, **options),
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_delay,
        "keep_result": 0,
        "max_tries": 1000,  # attempts are ours to count (see reaper); arq re-runs are no-ops
        "on_startup": startup,
        "on_shutdown": shutdown,
        "burst": burst,
        "handle_signals": not burst,
        "log_results": False,
        "shutdown_grace": settings.worker_shutdown_grace_seconds,
    }
    options.update(overrides)
    worker = WakingWorker(**options)
    return worker
