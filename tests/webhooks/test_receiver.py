"""The receiver helper: verifies, drops duplicates and stale states, types the data (memory and Redis)."""

import json
import time
from typing import Generic, TypeVar

import pytest
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from redis.asyncio import Redis

from webhooks import MemoryStore, Receiver, RedisStore, WebhookVerificationError, generate_secret
from webhooks.signing import headers_for

T = TypeVar("T")


class Text(BaseModel):
    text: str


class Run(BaseModel, Generic[T]):
    """A receiver's own model of the delivered run (camelCase on the wire), generic in its output."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    id: str
    flow_id: str
    status: str
    sequence: int
    output: T | None = None


def delivery(secret: str, msg_id: str, *, run: str = "exec_1", sequence: int = 1, status: str = "running"):
    data = {
        "id": run,
        "flowId": "echo",
        "status": status,
        "createdAt": "2026-11-29T00:00:00.000Z",
        "traceId": "t",
        "sequence": sequence,
        "output": {"text": "hi"},
    }
    body = json.dumps({"type": f"execution.{status}", "timestamp": "2026-11-29T00:00:00.000Z", "data": data})
    return body, headers_for([secret], msg_id, int(time.time()), body)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis: Redis):
    return MemoryStore() if request.param == "memory" else RedisStore(redis)


async def test_accepts_then_drops_duplicates_and_stale_states(store) -> None:
    secret = generate_secret()
    receiver = Receiver(secret, store=store)
    first = await receiver.receive(*delivery(secret, "msg_a", sequence=3, status="success"))
    assert first.accepted and first.event.type == "execution.success"
    typed = first.data_as(Run[Text])
    assert isinstance(typed.output, Text) and typed.output.text == "hi"
    again = await receiver.receive(*delivery(secret, "msg_a", sequence=3, status="success"))
    assert (again.accepted, again.reason) == (False, "duplicate")
    late = await receiver.receive(*delivery(secret, "msg_b", sequence=2))
    assert (late.accepted, late.reason) == (False, "stale")
    other_run = await receiver.receive(*delivery(secret, "msg_c", run="exec_2", sequence=1))
    assert other_run.accepted


async def test_refuses_what_does_not_verify(store) -> None:
    secret = generate_secret()
    body, headers = delivery(generate_secret(), "msg_x")
    with pytest.raises(WebhookVerificationError):
        await Receiver(secret, store=store).receive(body, headers)
