"""The transition notice: what every committed transition publishes, and one reconnecting subscription.

A notice is ``"{run id} {status} {sequence} {attempt}"`` on ``orch:transitions`` (written by the
transition script, read by the API's waiters and by workers, which stop an attempt that was
cancelled or superseded). Pub/sub is at-most-once: every reader re-reads Redis after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from orchestrator.models import ExecutionStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """A run moved to `status` at `sequence`, its current attempt being `attempt`."""

    run_id: str
    status: ExecutionStatus
    sequence: int
    attempt: int

    def format(self) -> str:
        """The published text."""
        return f"{self.run_id} {self.status.value} {self.sequence} {self.attempt}"

    @classmethod
    def parse(cls, data: bytes | str) -> Notice | None:
        """Read a published notice; None for anything else (a foreign or future format)."""
        text = data.decode() if isinstance(data, bytes) else data
        parts = text.split(" ")
        if len(parts) != 4 or not (parts[2].isdigit() and parts[3].isdigit()):
            return None
        try:
            status = ExecutionStatus(parts[1])
        except ValueError:
            return None
        return cls(parts[0], status, int(parts[2]), int(parts[3]))


class Subscription:
    """A pub/sub subscription to `channels` that reconnects for as long as :meth:`run` runs.

    `on_message(channel, data)` is called for each message; `on_connected()` after every
    (re)subscribe, since anything published meanwhile was missed; `on_lost()` when the connection
    drops. Callbacks must not block: they run on the subscription's task.
    """

    def __init__(
        self,
        redis: Redis,
        channels: Sequence[str],
        *,
        on_message: Callable[[str, bytes], None],
        on_connected: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        name: str = "subscription",
        poll_seconds: float = 5.0,
    ) -> None:
        self.redis = redis
        self.channels = tuple(channels)
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_lost = on_lost
        self.name = name
        self.poll_seconds = poll_seconds

    async def run(self) -> None:
        """Subscribe and dispatch until cancelled; reconnect after any failure."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(*self.channels)
                self.on_connected()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_seconds)
                    if msg is not None:
                        channel = msg["channel"]
                        self.on_message(
                            channel.decode() if isinstance(channel, bytes) else channel, msg["data"]
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.on_lost()
                logger.warning("%s lost (%s); resubscribing", self.name, exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
