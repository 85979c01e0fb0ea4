"""Waiters: one Redis subscription per API process, fanning transition wake-ups out to requests.

A long-poll or SSE request registers interest in a run id and parks on an asyncio.Event; the
subscription task sets the events of that run when its transition is published. No waiter holds
a Redis connection of its own, and none polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis

from orchestrator.runs import keys
from orchestrator.runs.notices import Notice, Subscription


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


class Tap:
    """Every run id that moved, for one reader of all transitions (the dashboard's live runs list).

    Bounded: past `limit` ids not yet taken it holds none and says `overflowed`, and after a
    resubscribe it says the same, since what was published meanwhile is unknown: the reader re-reads.
    """

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.run_ids: dict[str, None] = {}  # ordered, deduplicated
        self.overflowed = False
        self.event = asyncio.Event()

    def add(self, run_id: str | None) -> None:
        """Note a transition of `run_id` (None: unknown transitions were missed)."""
        if run_id is None or len(self.run_ids) >= self.limit:
            self.overflowed = True
            self.run_ids.clear()
        elif not self.overflowed:
            self.run_ids[run_id] = None
        self.event.set()

    async def take(self, seconds: float) -> tuple[list[str], bool] | None:
        """Wait up to `seconds`; then the run ids noted and whether some were missed, or None."""
        try:
            await asyncio.wait_for(self.event.wait(), seconds)
        except TimeoutError:
            return None
        self.event.clear()
        ids, missed = list(self.run_ids), self.overflowed
        self.run_ids, self.overflowed = {}, False
        return ids, missed


class Waiters:
    """The registry of parked requests of this process, and the subscription that wakes them."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._by_run: dict[str, set[Waiter]] = defaultdict(set)
        self._taps: set[Tap] = set()
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_run.values())

    async def start(self) -> None:
        """Start the subscription task."""
        subscription = Subscription(
            self._redis,
            (keys.TRANSITIONS_CHANNEL,),
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_lost=self.subscribed.clear,
            name="transition subscription",
            poll_seconds=30.0,
        )
        self._task = asyncio.get_running_loop().create_task(subscription.run())

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

    @contextlib.contextmanager
    def tap(self) -> Iterator[Tap]:
        """Hear of every transition (all tenants: the reader filters) for the duration of the block."""
        tap = Tap()
        self._taps.add(tap)
        try:
            yield tap
        finally:
            self._taps.discard(tap)

    def _wake_all(self) -> None:
        for tap in self._taps:
            tap.add(None)
        for group in self._by_run.values():
            for waiter in group:
                # Unknown: what happened while we were not listening. Waiters must re-read.
                waiter.status = None
                waiter.event.set()

    def notify(self, run_id: str, status: str, sequence: int) -> None:
        """Wake the waiters of `run_id` and tell every tap."""
        for tap in self._taps:
            tap.add(run_id)
        for waiter in self._by_run.get(run_id, ()):
            waiter.status = status
            waiter.sequence = sequence
            waiter.event.set()

    def _on_message(self, channel: str, data: bytes) -> None:
        notice = Notice.parse(data)
        if notice is not None:
            self.notify(notice.run_id, notice.status.value, notice.sequence)

    def _on_connected(self) -> None:
        self.subscribed.set()
        # Anything published while we were not subscribed was missed: let waiters re-read.
        self._wake_all()
