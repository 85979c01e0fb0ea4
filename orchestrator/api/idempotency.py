"""Idempotency-Key: the first request with a key claims it with its body's fingerprint and the
run ids it will create; a repeat with the same body replays those ids, another body is a conflict.

Creating a run with a given id is itself idempotent (the transition script refuses an id that
exists), so a replay simply creates the same ids again: whatever the first request managed to
create stays, whatever it did not (it died half-way) is created now, and nothing runs twice.
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


class IdempotencyConflict(Conflict):
    """The key was used before with a different body."""

    code = "idempotency_conflict"


@dataclass
class Claim:
    """The run ids a request must create, and whether they came from an earlier request."""

    run_ids: list[str]
    replayed: bool


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
    """Claim `key` for `run_ids`, or return the ids of the earlier claim with the same fingerprint."""
    name = keys.idempotency(tenant, key)
    value = json.dumps({"fp": fp, "ids": run_ids})
    if await redis.set(name, value, nx=True, ex=ttl):
        return Claim(run_ids=run_ids, replayed=False)
    raw = await redis.get(name)
    if raw is None:  # expired between the two calls: claim again
        return await claim(redis, tenant=tenant, key=key, fp=fp, run_ids=run_ids, ttl=ttl)
    earlier = json.loads(raw)
    if earlier["fp"] != fp:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request body", details={"idempotencyKey": key}
        )
    return Claim(run_ids=list(earlier["ids"]), replayed=True)
