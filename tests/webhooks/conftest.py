"""Fixtures of the webhooks tests: a running dispatcher and a loopback receiver (no orchestrator)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.receiver import Receiver
from tests.webhooks.helpers import running_dispatcher
from webhooks.dispatcher import Dispatcher


@pytest.fixture
async def dispatcher(redis: Redis) -> AsyncIterator[Dispatcher]:
    async with running_dispatcher(redis) as d:
        yield d


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()
