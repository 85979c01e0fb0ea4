"""Dashboard sign-ins: a random cookie whose SHA-256 names a Redis hash holding the tenant and a CSRF token.

The cookie is the only copy of the session id (Redis holds its digest, as it holds API keys'), it
is HttpOnly and SameSite=Lax, and the session expires after ``dashboard_session_seconds`` unused.
The API key typed into the login form is checked once and never stored, logged or put in a URL.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from orchestrator.runs import keys

COOKIE = "orch_session"
COOKIE_PATH = "/dashboard"


@dataclass(frozen=True)
class Session:
    """One signed-in browser: whose data it sees, and the token its POSTs must carry."""

    tenant: str
    csrf: str


def _key(session_id: str) -> str:
    return keys.dashboard_session(hashlib.sha256(session_id.encode()).hexdigest())


class Sessions:
    """Creates, reads (renewing) and ends dashboard sessions in Redis."""

    def __init__(self, redis: Redis, *, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_seconds = ttl_seconds

    async def create(self, tenant: str) -> tuple[str, Session]:
        """A new session for `tenant`: its cookie value (shown to nobody else) and its contents."""
        session_id = secrets.token_urlsafe(32)
        session = Session(tenant=tenant, csrf=secrets.token_urlsafe(32))
        key = _key(session_id)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(key, mapping={"tenant": session.tenant, "csrf": session.csrf})
            tx.expire(key, self.ttl_seconds)
            await tx.execute()
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        """The live session named by a cookie value (its idle timer restarts), or None."""
        if not 20 <= len(session_id) <= 100:
            return None
        key = _key(session_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, ("tenant", "csrf"))
            pipe.expire(key, self.ttl_seconds)  # a no-op when the key is gone
            (tenant, csrf), _ = await pipe.execute()
        if tenant is None or csrf is None:
            return None
        return Session(tenant=tenant.decode(), csrf=csrf.decode())

    async def end(self, session_id: str) -> None:
        """Sign out: the cookie value names nothing any more."""
        await self.redis.delete(_key(session_id))
