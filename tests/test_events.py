"""How runs store their JSON (issue 15): packed with a frozen dictionary, read back unchanged."""

from __future__ import annotations

import hashlib
import json

from redis.asyncio import Redis

from orchestrator import events
from orchestrator.runs import keys
from tests.runs.test_store import make_store
from webhooks import compression

# Bytes stored in every Redis depend on the dictionary: editing it would make them unreadable.
FROZEN = "84ebbece2cd154a34bed93d7a4f0a713dc4ea7534b9d89f9974857b7041bbaed"


def test_the_codec_dictionary_never_changes() -> None:
    assert hashlib.sha256(events.CODEC_DICTIONARY).hexdigest() == FROZEN


async def test_snapshots_log_entries_and_bodies_are_stored_packed_and_read_back_whole(
    redis: Redis, settings
) -> None:
    store = make_store(redis, settings)
    run = await store.create(tenant="a", flow_id="echo", input_json='{"text":"hi"}')
    stored = await redis.hget(keys.run(run.id), "json")
    [entry] = await redis.lrange(keys.run_events(run.id), 0, -1)
    assert compression.packed(stored) and compression.packed(entry)
    assert len(stored) < len(compression.expand(stored)) / 2
    assert json.loads(await store.get_json(run.id, tenant="a")) == run.model_dump(mode="json", by_alias=True)
    [logged], _ = await store.events(run.id, tenant="a")
    assert json.loads(logged)["data"]["id"] == run.id and (await store.get(run.id, tenant="a")) == run
