"""Waiters: the API process's parked requests, woken by their run's transition notices.

A long-poll or SSE request registers interest in a run and parks on an asyncio.Event. The process
holds one pub/sub connection and subscribes to a run's own channel (``orch:run:{id}:notices``) only
while somebody waits on that run, so an API process hears only the runs its clients wait for,
whatever the total load. A waiter is registered, and its channel's subscription confirmed, before
the request reads the run's state: no transition can fall between the read and the wait. A
channel is unsubscribed a while after its last waiter left (a run waited on again soon reuses it).

A :class:`Tap` hears every transition (the dashboard's live Runs list): while one is open, the
process also holds a pattern subscription to every run channel, and drops it once none is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from orchestrator.runs import keys
from orchestrator.runs.notices import Notice

logger = logging.getLogger(__name__)

# A channel whose last waiter left is kept this long before it is unsubscribed.
LINGER_SECONDS = 5.0
# How long a new waiter waits for its channel's subscription to be confirmed.
CONFIRM_SECONDS = 2.0
ALIVE = f"{keys.PREFIX}:api:alive"  # subscribed so the connection exists before any run channel
EVERY_RUN = keys.run_channel("*")  # the pattern a tap listens through


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
        self._pubsub: PubSub | None = None
        self._active: set[str] = set()  # channels whose subscription the server confirmed
        self._confirming: dict[str, asyncio.Future[None]] = {}
        self._idle_since: dict[str, float] = {}
        self._taps: set[Tap] = set()
        self._taps_idle_since: float | None = None
        self._late: set[str] = set()  # channels whose waiters must re-read once confirmed
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(w) for w in self._by_run.values())

    @property
    def tapping(self) -> bool:
        """Whether the pattern subscription of the taps is held now (for tests and metrics)."""
        return EVERY_RUN in self._active

    @property
    def channels(self) -> int:
        """Run channels subscribed now (for tests and metrics)."""
        return len(self._active - {EVERY_RUN})

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

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[Waiter]:
        """Register a waiter for `run_id` for the duration of the block (always unregistered).

        On entry the run's channel is subscribed (and confirmed) if it was not already.
        """
        waiter = Waiter(run_id)
        self._by_run[run_id].add(waiter)
        self._idle_since.pop(run_id, None)
        try:
            await self._ensure(run_id)
            yield waiter
        finally:
            group = self._by_run.get(run_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_run[run_id]
                    self._idle_since[run_id] = time.monotonic()

    @contextlib.asynccontextmanager
    async def tap(self) -> AsyncIterator[Tap]:
        """Hear of every transition (all tenants: the reader filters) for the duration of the block.

        On entry the pattern subscription to every run channel is made (and confirmed) if it was not.
        """
        tap = Tap()
        self._taps.add(tap)
        self._taps_idle_since = None
        try:
            await self._ensure_channel(EVERY_RUN, pattern=True)
            yield tap
        finally:
            self._taps.discard(tap)
            if not self._taps:
                self._taps_idle_since = time.monotonic()

    async def _ensure(self, run_id: str) -> None:
        await self._ensure_channel(keys.run_channel(run_id), pattern=False)

    async def _ensure_channel(self, channel: str, *, pattern: bool) -> None:
        if channel in self._active or self._pubsub is None:
            return  # subscribed, or the connection is down (every waiter is woken when it is back)
        pending = self._confirming.get(channel)
        if pending is None:
            pending = self._confirming[channel] = asyncio.get_running_loop().create_future()
            try:
                if pattern:
                    await self._pubsub.psubscribe(channel)
                else:
                    await self._pubsub.subscribe(channel)
            except Exception as exc:  # the listener reconnects; waiters re-read when it is back
                self._confirming.pop(channel, None)
                pending.set_result(None)  # others waiting on this confirmation go on at once
                logger.debug("subscribe %s failed: %s", channel, exc)
                return
        try:
            # shielded: a request cancelled meanwhile (its client left) does not cancel the others'
            await asyncio.wait_for(asyncio.shield(pending), CONFIRM_SECONDS)
        except TimeoutError:
            # The request reads now anyway; when the confirmation does come, its channel's waiters
            # are woken to read again (a transition may have fallen between).
            self._late.add(channel)

    def _wake_all(self) -> None:
        for tap in self._taps:
            tap.add(None)
        for group in self._by_run.values():
            for waiter in group:
                # Unknown: what happened while we were not listening. Waiters must re-read.
                waiter.status = None
                waiter.event.set()

    def _wake_channel(self, channel: str) -> None:
        """Let everyone hearing `channel` re-read: what was published before it was confirmed is unknown."""
        if channel == EVERY_RUN:
            for tap in self._taps:
                tap.add(None)
            return
        for waiter in self._by_run.get(keys.run_of_channel(channel) or "", ()):
            waiter.status = None
            waiter.event.set()

    def notify(self, run_id: str, status: str, sequence: int) -> None:
        """Wake the waiters of `run_id`."""
        for waiter in self._by_run.get(run_id, ()):
            waiter.status = status
            waiter.sequence = sequence
            waiter.event.set()

    def _on_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        raw = message.get("pattern") if kind in ("pmessage", "psubscribe", "punsubscribe") else None
        raw = raw or message.get("channel", b"")
        channel = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind in ("message", "pmessage"):
            data = message.get("data", b"")
            notice = Notice.parse(data if isinstance(data, bytes | str) else b"")
            if notice is None:
                return
            if kind == "message":
                self.notify(notice.run_id, notice.status.value, notice.sequence)
            else:  # the same notice also comes as a 'message' when its run's channel is subscribed
                for tap in self._taps:
                    tap.add(notice.run_id)
        elif kind in ("subscribe", "psubscribe"):
            self._active.add(channel)
            pending = self._confirming.pop(channel, None)
            if pending is not None and not pending.done():
                pending.set_result(None)
            if channel in self._late:
                self._late.discard(channel)
                self._wake_channel(channel)
        elif kind in ("unsubscribe", "punsubscribe"):
            self._active.discard(channel)

    async def _linger(self, pubsub: PubSub) -> None:
        """Unsubscribe the channels nobody has waited on for LINGER_SECONDS."""
        now = time.monotonic()
        stale = [
            r
            for r, since in self._idle_since.items()
            if now - since > LINGER_SECONDS and r not in self._by_run
        ]
        for run_id in stale:
            # a waiter may have come back for it while an earlier unsubscribe was awaited
            if self._idle_since.pop(run_id, None) is None or run_id in self._by_run:
                continue
            channel = keys.run_channel(run_id)
            if channel in self._active:
                self._active.discard(channel)  # from now on a new waiter subscribes again
                await pubsub.unsubscribe(channel)
        idle = self._taps_idle_since
        if idle is not None and now - idle > LINGER_SECONDS and not self._taps:
            self._taps_idle_since = None
            if EVERY_RUN in self._active:
                self._active.discard(EVERY_RUN)
                await pubsub.punsubscribe(EVERY_RUN)

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(ALIVE)
                self._pubsub = pubsub
                self._active.clear()
                if self._by_run:
                    channels = [keys.run_channel(r) for r in self._by_run]
                    for channel in channels:
                        self._confirming.setdefault(channel, asyncio.get_running_loop().create_future())
                    self._late.update(channels)  # woken again once confirmed (see below)
                    await pubsub.subscribe(*channels)
                if self._taps:
                    self._confirming.setdefault(EVERY_RUN, asyncio.get_running_loop().create_future())
                    self._late.add(EVERY_RUN)
                    await pubsub.psubscribe(EVERY_RUN)
                self.subscribed.set()
                # Anything published while we were not subscribed was missed: let waiters re-read
                # now, and again as each channel's subscription is confirmed.
                self._wake_all()
                last_linger = time.monotonic()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                    if message is not None:
                        self._on_message(message)
                    if time.monotonic() - last_linger > 1.0:
                        last_linger = time.monotonic()
                        await self._linger(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                self._pubsub = None
                self._active.clear()
                for pending in self._confirming.values():
                    if not pending.done():
                        pending.set_result(None)  # do not hold requests: they re-read when woken
                self._confirming.clear()
                logger.warning("transition subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
