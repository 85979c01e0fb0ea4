"""Waiters: one Redis subscription per API process, fanning transition wake-ups out to requests.

A long-poll or SSE request registers interest in a run id and parks on an asyncio.Event; the
subscription task sets the events of that run when its transition is published. No waiter holds
a Redis connection of its own, and none polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis

from orchestrator.runs import keys

logger = logging.getLogger(__name__)


class Waiter:
    """One parked request: its event fires on every transition of its run (and on resubscribe)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.event = asyncio.Event()
        self.status: str | None = None
        self.sequence = 0

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a wake-up; True if one came. Clears it for the next."""
        try:
            await asyncio.wait_for(self.event.wait(), seconds)
        except TimeoutError:
            return False
        self.event.clear()
        return True


class Waiters:
    """The registry of parked requests of this process, and the subscription that wakes them."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._by_run: dict[str, set[Waiter]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_run.values())

    async def start(self) -> None:
        """Start the subscription task."""
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        """Stop the subscription and wake every waiter so it can finish."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake_all()

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[Waiter]:
        """Register a waiter for `run_id` for the duration of the block (always unregistered)."""
        waiter = Waiter(run_id)
        self._by_run[run_id].add(waiter)
        try:
            yield waiter
        finally:
            group = self._by_run.get(run_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_run[run_id]

    def _wake_all(self) -> None:
        for group in self._by_run.values():
            for waiter in group:
                # Unknown: what happened while we were not listening. Waiters must re-read.
                waiter.status = None
                waiter.event.set()

    def notify(self, run_id: str, status: str, sequence: int) -> None:
        """Wake the waiters of `run_id`."""
        for waiter in self._by_run.get(run_id, ()):
            waiter.status = status
            waiter.sequence = sequence
            waiter.event.set()

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(keys.TRANSITIONS_CHANNEL)
                self.subscribed.set()
                # Anything published while we were not subscribed was missed: let waiters re-read.
                self._wake_all()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                    if msg is None:
                        continue
                    parts = msg["data"].decode().split(" ")
                    if len(parts) == 4:
                        self.notify(parts[0], parts[1], int(parts[2]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                logger.warning("transition subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
