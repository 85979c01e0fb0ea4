"""Idempotency-Key: the first request with a key claims it with its body's fingerprint and the
run ids it will create; a repeat with the same body replays those ids, another body is a conflict.

Creating a run with a given id is itself idempotent (the transition script refuses an id that
exists), so a replay simply creates the same ids again: whatever the first request managed to
create stays, whatever it did not (it died half-way) is created now, and nothing runs twice.

A key never outlives its meaning: once the first request has created everything it claimed, the
claim is marked complete; a later request with that key whose executions have since expired
(``ORCH_RUN_RETENTION_SECONDS`` shorter than ``ORCH_IDEMPOTENCY_TTL_SECONDS``) is a new request
(new executions, no ``Idempotent-Replayed``), never a replay that would run the flow again under
an old id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from orchestrator.errors import Conflict, ValidationFailed
from orchestrator.runs import keys

MAX_KEY_LENGTH = 255

# Replace a claim only if it is still the one we read (a concurrent request may have done it first).
# KEYS: 1 the claim. ARGV: 1 the value read, 2 the new value, 3 ttl seconds. Returns 1 if replaced.
REPLACE = """
local claim = KEYS[1]
local seen, value, ttl = unpack(ARGV)
if redis.call('GET', claim) ~= seen then return 0 end
redis.call('SET', claim, value, 'EX', ttl)
return 1
"""

# Mark a claim complete, keeping its expiry. KEYS: 1 the claim. ARGV: 1 the value read, 2 the new value.
COMPLETE = """
local claim = KEYS[1]
local seen, value = unpack(ARGV)
if redis.call('GET', claim) ~= seen then return 0 end
redis.call('SET', claim, value, 'KEEPTTL')
return 1
"""


class IdempotencyConflict(Conflict):
    """The key was used before with a different body."""

    code = "idempotency_conflict"


@dataclass
class Claim:
    """The run ids a request must create, and whether they came from an earlier request."""

    run_ids: list[str]
    replayed: bool
    key: str | None = None  # the claim's Redis key (None without an Idempotency-Key)
    value: str | None = None  # the claim as stored, while not yet complete

    async def complete(self, redis: Redis) -> None:
        """Say the claimed executions all exist now (a later miss means they expired)."""
        if self.key is None or self.value is None:
            return
        doc = json.loads(self.value)
        if doc.get("done"):
            return
        await redis.eval(COMPLETE, 1, self.key, self.value, json.dumps({**doc, "done": True}))


def check_key(key: str) -> str:
    """Validate an Idempotency-Key header value (1..255 visible ASCII characters)."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise ValidationFailed.field("Idempotency-Key", "must be 1 to 255 visible ASCII characters")
    return key


def fingerprint(route: str, document: Any) -> str:
    """A digest of what was asked: the route and the body, whatever its key order or spacing."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{route}\n{canonical}".encode()).hexdigest()


async def claim(redis: Redis, *, tenant: str, key: str, fp: str, run_ids: list[str], ttl: int) -> Claim:
    """Claim `key` for `run_ids`, or return the ids of the earlier claim with the same fingerprint.

    Raises IdempotencyConflict when the key was claimed with another body.
    """
    name = keys.idempotency(tenant, key)
    value = json.dumps({"fp": fp, "ids": run_ids})
    for _ in range(10):
        if await redis.set(name, value, nx=True, ex=ttl):
            return Claim(run_ids=run_ids, replayed=False, key=name, value=value)
        raw = await redis.get(name)
        if raw is None:  # expired between the two calls: claim again
            continue
        seen = raw.decode()
        earlier = json.loads(seen)
        if earlier["fp"] != fp:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body", details={"idempotencyKey": key}
            )
        ids = list(earlier["ids"])
        if not earlier.get("done"):
            return Claim(run_ids=ids, replayed=True, key=name, value=seen)
        async with redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.exists(keys.run(run_id))
            alive = await pipe.execute()
        if all(alive):
            return Claim(run_ids=ids, replayed=True)
        # Its executions expired: the key has outlived its meaning, and this is a new request.
        if await redis.eval(REPLACE, 1, name, seen, value, ttl):
            return Claim(run_ids=run_ids, replayed=False, key=name, value=value)
    raise Conflict("this Idempotency-Key is being claimed by concurrent requests; retry")
