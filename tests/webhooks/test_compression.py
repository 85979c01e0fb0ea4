"""Packed bodies (issue 15): deflate with a named preset dictionary, read back whatever was stored."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from tests.webhooks.helpers import claim, deliveries_of, endpoint
from webhooks import compression, keys
from webhooks.delivery_units import Message

DICTIONARY = b'{"type":"thing.happened","timestamp":"2026-01-01T00:00:00.000Z","data":{"id":"","name":""}}'
compression.register("test1", DICTIONARY)
BODY = json.dumps(
    {"type": "thing.happened", "timestamp": "2026-11-30T10:00:00.000Z", "data": {"id": "x" * 80}}
)


def test_a_packed_body_expands_to_the_same_bytes_and_is_smaller() -> None:
    stored = compression.pack(BODY, "test1")
    assert isinstance(stored, bytes) and compression.packed(stored) and len(stored) < len(BODY) / 2
    assert compression.text(stored) == BODY and compression.expand(stored) == BODY.encode()
    assert compression.text(BODY) == BODY and compression.expand(BODY.encode()) == BODY.encode()


def test_short_bodies_stay_as_they_are() -> None:
    assert compression.pack('{"a":1}', "test1") == '{"a":1}'


def test_an_unknown_codec_is_an_error_naming_it_and_a_dictionary_never_changes() -> None:
    stored = compression.MARK + b"nope" + compression.MARK + b"\x03\x00"
    with pytest.raises(compression.UnknownCodec, match="nope"):
        compression.expand(stored)
    compression.register("test1", DICTIONARY)  # the same again: fine
    with pytest.raises(ValueError):
        compression.register("test1", DICTIONARY + b"x")
    with pytest.raises(ValueError):
        compression.register("a\x00b", b"")


async def test_a_message_is_sent_with_its_body_expanded_and_one_stored_as_a_hash_is_still_read(
    redis: Redis,
) -> None:
    store = deliveries_of(redis)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/x")
    packed = Message(
        "msg_01M8QA00000000000000000001", "thing.happened", "a", "s1", compression.pack(BODY, "test1"), 1
    )
    await store.save_messages([packed])
    assert await redis.type(keys.message(packed.id)) == b"string"
    # A message stored by the version before (a hash of fields), as a running system holds it.
    old = "msg_01M8QA00000000000000000002"
    await redis.hset(
        keys.message(old),
        mapping={"type": "thing.happened", "tenant": "a", "subject": "s2", "body": BODY, "created": 2},
    )
    await store.schedule([(packed.id, ep_id, 1, "a", ""), (old, ep_id, 2, "a", "")])
    taken = {d.message_id: d for d in await claim(store, 10, claim_ms=60_000)}
    for msg_id, subject in ((packed.id, "s1"), (old, "s2")):
        message = taken[msg_id].message
        assert message is not None and message.subject == subject
        assert compression.text(message.body) == BODY
    page, _ = await store.page(ep_id, status=None, limit=10, cursor=None)
    assert sorted((d.event_type, d.run_id) for d in page) == [
        ("thing.happened", "s1"),
        ("thing.happened", "s2"),
    ]
