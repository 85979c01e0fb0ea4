"""API keys: which tenant a bearer key belongs to. Keys are compared as SHA-256 digests only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

from redis.asyncio import Redis
from starlette.requests import Request

from orchestrator.errors import Unauthorized
from orchestrator.runs import keys

# A key found in Redis is trusted this long before it is looked up again (revocation delay).
CACHE_SECONDS = 10.0


def digest(key: str) -> str:
    """The form in which a key is stored and compared."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random API key."""
    return "sk_" + secrets.token_urlsafe(32)


class KeyRing:
    """Resolves bearer keys to tenants from ``ORCH_API_KEYS`` and from keys stored hashed in Redis."""

    def __init__(self, static: Iterable[tuple[str, str]], redis: Redis) -> None:
        self._static = [(digest(key).encode(), tenant) for tenant, key in static]
        self._redis = redis
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant_for(self, key: str) -> str | None:
        """The tenant owning `key`, or None."""
        wanted = digest(key)
        found: str | None = None
        for candidate, tenant in self._static:
            # every configured key is compared, in constant time, whichever matches
            if hmac.compare_digest(candidate, wanted.encode()):
                found = tenant
        if found is not None:
            return found
        cached = self._cache.get(wanted)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        # The lookup is by digest: timing reveals nothing usable about the key itself.
        raw = await self._redis.hget(keys.API_KEYS, wanted)
        if raw is None:
            self._cache.pop(wanted, None)
            return None
        tenant = str(raw.decode())
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[wanted] = (tenant, now + CACHE_SECONDS)
        return tenant


async def create_key(redis: Redis, tenant: str) -> str:
    """Make a new key for `tenant`, store only its digest, and return the key (shown once)."""
    key = generate_key()
    await redis.hset(keys.API_KEYS, digest(key), tenant)
    return key


async def authenticate(request: Request) -> str:
    """Return the tenant of the request's bearer key, or raise Unauthorized."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send Authorization: Bearer <api key>")
    keyring: KeyRing = request.app.state.services.keyring
    tenant = await keyring.tenant_for(key.strip())
    if tenant is None:
        raise Unauthorized("unknown API key")
    return tenant
