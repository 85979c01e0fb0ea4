"""Acknowledged means replicated, when asked: Redis's ``WAIT`` between a write and its acknowledgement.

``WAIT n timeout`` answers once `n` replicas have reached the replication offset Redis recorded
for *its connection* (after the connection's last command in Redis 7.0, its last write in later
versions). So a write and its WAIT go down one connection: queued at the end of the write's own
pipeline (no extra round trip), or, after writes made on other connections, behind a fence: a
``PUBLISH`` on a channel nobody reads, which Redis replicates like a write, then WAIT.
Replication is one ordered stream, so a replica that holds the fence holds everything the primary
had executed before it.

With ``replicas == 0`` (the default) none of this runs: no command and no round trip is added.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webhooks.errors import NotReplicated

if TYPE_CHECKING:  # settings import this module: every command would otherwise load redis-py
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

logger = logging.getLogger(__name__)

FENCE_CHANNEL = "wh:replication-fence"


@dataclass(frozen=True)
class Replication:
    """How many replicas must hold a write before it is acknowledged, and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 1000

    @property
    def enabled(self) -> bool:
        """Whether writes wait for replicas at all."""
        return self.replicas > 0

    def queue(self, pipe: Pipeline) -> None:
        """Queue WAIT as the last command of `pipe`: its last result is then the replicas' count."""
        pipe.wait(self.replicas, self.timeout_ms)

    def check(self, acked: Any, *, what: str) -> int:
        """Return WAIT's count; raise NotReplicated when it is short of `replicas` (or WAIT failed)."""
        from redis.exceptions import ResponseError

        if isinstance(acked, ResponseError):
            # "WAIT cannot be used with replica instances": this node was demoted (a failover).
            raise NotReplicated(f"{what}: the Redis this process writes to is no longer the primary")
        count = int(acked)
        if count < self.replicas:
            raise NotReplicated(
                f"{what} was not confirmed by {self.replicas} Redis replica(s) within "
                f"{self.timeout_ms} ms ({count} did); the write may exist: retry (a create with the "
                "same Idempotency-Key returns the same run)",
                details={"replicasRequired": self.replicas, "replicasAcknowledged": count},
            )
        return count

    async def fence(self, redis: Redis, *, what: str) -> None:
        """Return once everything Redis executed so far is on `replicas` replicas (NotReplicated if not)."""
        if not self.enabled:
            return
        async with redis.pipeline(transaction=False) as pipe:
            pipe.publish(FENCE_CHANNEL, b"")
            self.queue(pipe)
            published, acked = await pipe.execute(raise_on_error=False)
        if isinstance(published, Exception):
            raise published  # without the fence, WAIT would vouch for nothing
        self.check(acked, what=what)

    async def script(
        self, redis: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], *, what: str
    ) -> tuple[Any, int | NotReplicated]:
        """Run a registered script and WAIT in one round trip: (its result, the count or the shortfall).

        The script's own errors are raised; NOSCRIPT (a new primary after a failover has an empty
        script cache) loads it and runs it again. A shortfall is returned, not raised, because the
        write stands on the primary: the caller decides (the API answers 503, a worker goes on).
        """
        from redis.exceptions import NoScriptError

        for _ in range(2):
            async with redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                self.queue(pipe)
                result, acked = await pipe.execute(raise_on_error=False)
            if isinstance(result, NoScriptError):
                script.sha = await redis.script_load(script.script)
                continue
            if isinstance(result, Exception):
                raise result
            try:
                return result, self.check(acked, what=what)
            except NotReplicated as short:
                return result, short
        raise NotReplicated(f"{what}: the script could not be loaded on the primary")

    def fence_sync(self, client: Any, *, what: str) -> None:
        """:meth:`fence` for a synchronous redis-py client (a worker's liveness thread)."""
        if not self.enabled:
            return
        with client.pipeline(transaction=False) as pipe:
            pipe.publish(FENCE_CHANNEL, b"")
            pipe.wait(self.replicas, self.timeout_ms)
            published, acked = pipe.execute(raise_on_error=False)
        if isinstance(published, Exception):
            raise published
        self.check(acked, what=what)


def shortfall_noted(outcome: int | NotReplicated, *, what: str) -> None:
    """For writers that answer no client (workers, reapers): log a shortfall and go on.

    The write stands on the primary; if a failover loses it, what depends on it is recovered
    like any lost write of theirs (a lapsed lease, an unacknowledged outbox entry).
    """
    if isinstance(outcome, NotReplicated):
        logger.warning("%s: %s", what, outcome.message)
