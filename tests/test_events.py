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


async def test_a_snapshot_is_stored_once_packed_and_read_back_whole(redis: Redis, settings) -> None:
    store = make_store(redis, settings)
    run = await store.create(tenant="a", flow_id="echo", input_json='{"text":"hi"}')
    [entry] = await redis.lrange(keys.run_events(run.id), 0, -1)
    assert compression.packed(entry) and len(entry) < len(compression.expand(entry)) / 2
    # the snapshot is stored once: as the last event's data, not again in the run's hash
    assert await redis.hget(keys.run(run.id), "json") is None
    assert events.snapshot(entry) == await store.get_json(run.id, tenant="a")
    assert json.loads(await store.get_json(run.id, tenant="a")) == run.model_dump(mode="json", by_alias=True)
    [logged], _ = await store.events(run.id, tenant="a")
    assert json.loads(logged)["data"]["id"] == run.id and (await store.get(run.id, tenant="a")) == run


async def test_a_run_stored_before_keeps_being_read_and_loses_its_copy_on_its_next_transition(
    redis: Redis, settings
) -> None:
    # Runs written by the version before hold the snapshot twice (a 'json' field, plain log entries).
    store = make_store(redis, settings)
    run = await store.create(tenant="a", flow_id="echo", input_json='{"text":"hi"}')
    [entry] = await redis.lrange(keys.run_events(run.id), 0, -1)
    await redis.lset(keys.run_events(run.id), 0, compression.expand(entry))
    await redis.hset(keys.run(run.id), "json", events.snapshot(entry))
    assert (await store.get(run.id, tenant="a")) == run
    await store.cancel(run.id, tenant="a")
    assert await redis.hget(keys.run(run.id), "json") is None
    assert (await store.get(run.id, tenant="a")).status.value == "cancelled"
