"""Whole-database views of Redis for the security tests: a comparable snapshot, and every byte stored."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis


@dataclass
class Snapshot:
    """Every key with its value (see `snapshot`) and its PTTL in ms (-1: never expires), and when."""

    started: float  # time.monotonic() when the scan began, and when it ended
    finished: float = 0.0
    keys: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)


async def snapshot(redis: Redis) -> Snapshot:
    """Every key with its value and time to live.

    Hashes and sets are read as sorted content, not DUMPed: a hash table's DUMP follows its bucket
    order, which an incremental rehash (a step runs on any lookup, reads included) may change.
    """
    out = Snapshot(time.monotonic())
    async for key in redis.scan_iter(count=1000):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.type(key)
            pipe.pttl(key)
            pipe.dump(key)
            kind, ttl, value = await pipe.execute()
        if kind == b"hash":
            value = repr(sorted((await redis.hgetall(key)).items())).encode()
        elif kind == b"set":
            value = repr(sorted(await redis.smembers(key))).encode()
        if kind != b"none" and value is not None:  # not expired since SCAN named it
            out.keys[key] = (value, ttl)
    out.finished = time.monotonic()
    return out


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What was written between two snapshots: keys added, removed, rewritten, or given a longer life.

    A key whose time to live ran out between the two is not a change.
    """
    elapsed_ms = (after.finished - before.started) * 1000
    old_keys, new_keys = before.keys, after.keys
    found = [f"added {k!r}" for k in sorted(new_keys.keys() - old_keys.keys())]
    found += [
        f"removed {k!r}"
        for k in sorted(old_keys.keys() - new_keys.keys())
        if not 0 <= old_keys[k][1] <= elapsed_ms
    ]
    for key in sorted(old_keys.keys() & new_keys.keys()):
        (old, old_ttl), (new, new_ttl) = old_keys[key], new_keys[key]
        if old != new:
            found.append(f"rewrote {key!r}")
        # A TTL only counts down; one that grew (or appeared, or went) was set again by a write.
        if (old_ttl < 0) != (new_ttl < 0) or new_ttl > old_ttl:
            found.append(f"expiry of {key!r} changed ({old_ttl} -> {new_ttl} ms)")
    return found


async def stored_bytes(redis: Redis) -> dict[bytes, bytes]:
    """Every key with all the bytes of its value (members, fields, scores, stream entries) concatenated.

    Read by type rather than with DUMP, whose RDB encoding may compress long strings.
    """
    out: dict[bytes, bytes] = {}
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        parts: list[bytes] = []
        if kind == "string":
            parts = [await redis.get(key) or b""]
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                parts += [field, value]
        elif kind == "list":
            parts = list(await redis.lrange(key, 0, -1))
        elif kind == "set":
            parts = list(await redis.smembers(key))
        elif kind == "zset":
            for member, score in await redis.zrange(key, 0, -1, withscores=True):
                parts += [member, repr(score).encode()]
        elif kind == "stream":
            for entry_id, fields in await redis.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, value]
        elif kind != "none":  # expired meanwhile
            raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
        out[key] = b"\x00".join(parts)
    return out
