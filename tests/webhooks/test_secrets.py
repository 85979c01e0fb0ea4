"""Secret rotation: every secret rotated out within 24 h keeps signing, endpoints and default alike."""

from __future__ import annotations

import json

import pytest
import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver, Recorded
from tests.webhooks.helpers import FAST, endpoint, publish, running_dispatcher
from webhooks import generate_secret, keys, verify
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.models import redis_now, to_ms
from webhooks.secrets import MAX_PREVIOUS_SECRETS, ROTATION_OVERLAP_MS, TooManyRotations


def accepted_by_all(got: Recorded, secret: str) -> None:
    """The delivery verifies under `secret` with ours and both official verifiers."""
    verify(got.body, got.headers, secret)
    standard.Webhook(secret).verify(got.body, got.headers)
    svix_webhooks.Webhook(secret).verify(got.body, got.headers)


async def test_rotating_twice_keeps_the_oldest_secret_signing(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    # Regression (issue 14): create (S0), rotate (S1), rotate (S2): the delivery no longer verified with S0.
    store = EndpointStore(redis)
    ep_id, s0 = await endpoint(redis, receiver.url)
    s1 = await store.rotate_secret(ep_id, tenant="a")
    s2 = await store.rotate_secret(ep_id, tenant="a")
    await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 1)
    [got] = receiver.requests
    assert len(got.headers["webhook-signature"].split()) == 3
    for secret in (s0, s1, s2):
        accepted_by_all(got, secret)


async def test_up_to_the_cap_every_rotated_secret_signs_then_rotation_is_refused(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    store = EndpointStore(redis)
    ep_id, first = await endpoint(redis, receiver.url)
    secrets = [first] + [await store.rotate_secret(ep_id, tenant="a") for _ in range(MAX_PREVIOUS_SECRETS)]
    with pytest.raises(TooManyRotations) as refused:
        await store.rotate_secret(ep_id, tenant="a")
    assert refused.value.status_code == 409 and refused.value.details["maxPreviousSecrets"] == 10
    assert (await store.get(ep_id)).secret == secrets[-1]  # the refusal changed nothing
    await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 1)
    for secret in secrets:
        accepted_by_all(receiver.requests[0], secret)


async def test_a_secret_stops_signing_when_its_overlap_ends_and_frees_a_place(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    store = EndpointStore(redis)
    ep_id, s0 = await endpoint(redis, receiver.url)
    s1 = await store.rotate_secret(ep_id, tenant="a")
    for _ in range(MAX_PREVIOUS_SECRETS - 1):
        await store.rotate_secret(ep_id, tenant="a")
    # The overlap of S0 (the oldest) ends now: what 24 h of waiting would do, by Redis's clock.
    stored = json.loads(await redis.hget(keys.endpoint(ep_id), "previous_secrets"))
    assert stored[-1]["until"] - to_ms(await redis_now(redis)) <= ROTATION_OVERLAP_MS
    stored[-1]["until"] = to_ms(await redis_now(redis)) - 1
    await redis.hset(keys.endpoint(ep_id), "previous_secrets", json.dumps(stored))
    newest = await store.rotate_secret(ep_id, tenant="a")  # a place was free again
    await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 1)
    [got] = receiver.requests
    accepted_by_all(got, s1)
    accepted_by_all(got, newest)
    with pytest.raises(Exception, match="signature"):
        svix_webhooks.Webhook(s0).verify(got.body, got.headers)


async def test_an_endpoint_stored_with_one_previous_secret_keeps_it_across_a_rotation(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    # Endpoints written before retired lists existed hold `previous_secret` and `previous_secret_until`.
    store = EndpointStore(redis)
    ep_id, s1 = await endpoint(redis, receiver.url)
    s0 = generate_secret()  # stands for the secret an old rotation left
    until = to_ms(await redis_now(redis)) + 3_600_000
    await redis.hset(
        keys.endpoint(ep_id), mapping={"previous_secret": json.dumps(s0), "previous_secret_until": until}
    )
    s2 = await store.rotate_secret(ep_id, tenant="a")
    assert not await redis.hexists(keys.endpoint(ep_id), "previous_secret")
    await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 1)
    for secret in (s0, s1, s2):
        accepted_by_all(receiver.requests[0], secret)


async def test_a_rotated_default_secret_is_used_within_seconds_and_the_old_one_still_signs(
    redis: Redis, receiver: Receiver
) -> None:
    # Regression (issue 14): a dispatcher read the tenant's default secret once and kept it for life.
    store = EndpointStore(redis)
    old = await store.default_secret("a")
    async with running_dispatcher(redis, FAST):
        await publish(redis, type_="execution.queued", hook={"url": receiver.url})
        await wait_for(lambda: len(receiver.requests) == 1)  # the dispatcher has read (cached) it
        new = await store.rotate_default_secret("a")
        assert await store.default_secret("a") == new

        async def signed_with_the_new_one() -> bool:
            await publish(redis, type_="execution.queued", hook={"url": receiver.url})
            await wait_for(lambda: len(receiver.requests) > 1)
            last = receiver.requests.pop()
            try:
                svix_webhooks.Webhook(new).verify(last.body, last.headers)
            except Exception:
                return False
            accepted_by_all(last, old)  # and the old one signs beside it
            accepted_by_all(last, new)
            return True

        await wait_for(signed_with_the_new_one, timeout=10, interval=0.3)


async def test_the_default_secret_keeps_every_rotated_one_up_to_the_cap(redis: Redis) -> None:
    store = EndpointStore(redis)
    first = await store.default_secret("a")
    rotated = [await store.rotate_default_secret("a") for _ in range(MAX_PREVIOUS_SECRETS)]
    with pytest.raises(TooManyRotations):
        await store.rotate_default_secret("a")
    assert await store.default_secret("a") == rotated[-1]
    assert await store.default_secret("b") not in (first, *rotated)  # per tenant
