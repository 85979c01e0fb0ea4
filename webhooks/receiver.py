"""For receivers: verify a delivery, then drop duplicates (by webhook-id) and stale states (by sequence).

    receiver = Receiver(secret, store=MemoryStore())         # or RedisStore(redis) across processes
    result = await receiver.receive(body, headers)            # raises WebhookVerificationError
    if result.accepted:
        handle(result.event.data_as(MyModel))

Deliveries are at least once, and retries can overtake each other, so a receiver sees the same
message twice and an older state after a newer one. The webhook-id answers the first problem;
``data.sequence`` (bumped on every transition of the subject ``data.id``) answers the second.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis

from webhooks.signing import Event, verify

M = TypeVar("M", bound=BaseModel)
DEFAULT_TTL = 3 * 24 * 3600  # longer than the whole retry schedule


class DedupStore(Protocol):
    """Where a receiver remembers what it has seen."""

    async def first_time(self, message_id: str, ttl: int) -> bool:
        """Record `message_id`; True only the first time it is seen."""
        ...

    async def advance(self, subject: str, sequence: int, ttl: int) -> bool:
        """Record `sequence` for `subject`; True unless a newer or equal one was seen already."""
        ...


class MemoryStore:
    """In-process store (one receiver process); entries expire after their ttl."""

    def __init__(self) -> None:
        self._ids: dict[str, float] = {}
        self._seqs: dict[str, tuple[int, float]] = {}

    def _sweep(self, now: float) -> None:
        if len(self._ids) + len(self._seqs) > 100_000:
            self._ids = {k: v for k, v in self._ids.items() if v > now}
            self._seqs = {k: v for k, v in self._seqs.items() if v[1] > now}

    async def first_time(self, message_id: str, ttl: int) -> bool:
        """Record `message_id`; True only the first time."""
        now = time.monotonic()
        self._sweep(now)
        if self._ids.get(message_id, 0) > now:
            return False
        self._ids[message_id] = now + ttl
        return True

    async def advance(self, subject: str, sequence: int, ttl: int) -> bool:
        """True if `sequence` is newer than any seen for `subject`."""
        now = time.monotonic()
        seen = self._seqs.get(subject)
        if seen is not None and seen[1] > now and seen[0] >= sequence:
            return False
        self._seqs[subject] = (sequence, now + ttl)
        return True


_ADVANCE = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '-1')
if seen >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisStore:
    """Store shared by every receiver process, in Redis (atomic per message and per subject)."""

    def __init__(self, redis: Redis, *, prefix: str = "whrecv") -> None:
        self.redis = redis
        self.prefix = prefix
        self._advance = redis.register_script(_ADVANCE)

    async def first_time(self, message_id: str, ttl: int) -> bool:
        """Record `message_id`; True only the first time."""
        return bool(await self.redis.set(f"{self.prefix}:id:{message_id}", b"1", nx=True, ex=ttl))

    async def advance(self, subject: str, sequence: int, ttl: int) -> bool:
        """True if `sequence` is newer than any seen for `subject`."""
        return bool(await self._advance(keys=[f"{self.prefix}:seq:{subject}"], args=[sequence, ttl]))


@dataclass(frozen=True)
class Received:
    """A verified delivery and whether to act on it (`reason` says why not)."""

    event: Event
    accepted: bool
    reason: str | None = None

    def data_as(self, model: type[M]) -> M:
        """The event's ``data`` parsed into `model` (e.g. ``Execution[InvoiceData]``)."""
        return model.model_validate(self.event.data)


class Receiver:
    """Verifies deliveries for one endpoint secret (or several, during rotation) and filters them."""

    def __init__(
        self,
        secret: str | bytes | Sequence[str | bytes],
        *,
        store: DedupStore | None = None,
        tolerance: int = 300,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.secret = secret
        self.store: DedupStore = store or MemoryStore()
        self.tolerance = tolerance
        self.ttl = ttl

    async def receive(
        self, body: bytes | str, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> Received:
        """Verify (raising WebhookVerificationError), then accept, or flag a duplicate or stale state."""
        event = verify(body, headers, self.secret, tolerance=self.tolerance)
        if not await self.store.first_time(event.id, self.ttl):
            return Received(event, accepted=False, reason="duplicate")
        data: Any = event.data
        if (
            isinstance(data, dict)
            and isinstance(data.get("id"), str)
            and isinstance(data.get("sequence"), int)
        ) and not await self.store.advance(data["id"], data["sequence"], self.ttl):
            return Received(event, accepted=False, reason="stale")
        return Received(event, accepted=True)
