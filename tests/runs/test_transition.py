"""The transition script's side of the outbox seam, its named bindings, and its small encodings."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import fields

import pytest
from redis.asyncio import Redis

from orchestrator.models import ExecutionStatus
from orchestrator.runs.notices import Notice
from orchestrator.runs.transition import TRANSITION, Deadline, TransitionArgs, TransitionKeys
from orchestrator.settings import Settings
from tests.runs.test_store import make_store
from webhooks import compression
from webhooks.outbox import OUTBOX_STREAM, Hook, MalformedEntry, OutboxEntry


async def entries(redis: Redis) -> list[OutboxEntry]:
    return [OutboxEntry.parse(entry_id, data) for entry_id, data in await redis.xrange(OUTBOX_STREAM)]


async def test_the_scripts_xadd_is_read_back_by_the_dispatchers_parser(
    redis: Redis, settings: Settings
) -> None:
    before = int(time.time() * 1000)
    run = await make_store(redis, settings).create(tenant="a", flow_id="echo", input_json='{"text":"hi"}')
    [entry] = await entries(redis)
    assert entry.id.startswith("msg_") and entry.type == "execution.queued"
    assert (entry.tenant, entry.subject, entry.flow) == ("a", run.id, "echo")
    body = json.loads(compression.text(entry.body))
    assert body["type"] == "execution.queued" and body["data"]["id"] == run.id
    assert entry.created_ms > 0 and before - 1000 <= entry.created_ms <= int(time.time() * 1000) + 1000
    assert entry.hook is None


async def test_a_runs_webhook_rides_along_in_the_entry(redis: Redis, settings: Settings) -> None:
    run = await make_store(redis, settings).create(
        tenant="b", flow_id="echo", input_json="{}", webhook_json='{"url": "http://127.0.0.1:9/h"}'
    )
    [entry] = await entries(redis)
    assert entry.subject == run.id and entry.tenant == "b"
    assert entry.hook == Hook(url="http://127.0.0.1:9/h")


@pytest.mark.parametrize("hook", [None, Hook("https://example.com/h", ("execution.success",))])
async def test_an_entry_round_trips_through_the_stream(redis: Redis, hook: Hook | None) -> None:
    sent = OutboxEntry(
        id="msg_1", type="execution.failed", tenant="t", subject="exec_9", flow="", body='{"a": 1}', hook=hook
    )
    stream_id = await redis.execute_command("XADD", OUTBOX_STREAM, "*", *sent.to_fields())
    [(entry_id, data)] = await redis.xrange(OUTBOX_STREAM)
    got = OutboxEntry.parse(entry_id, data)
    assert got == dataclasses.replace(sent, created_ms=int(stream_id.decode().split("-")[0]))


def test_the_scripts_bindings_follow_the_dataclasses() -> None:
    first, second = [line for line in TRANSITION.strip().splitlines() if line.startswith("local ")][:2]
    keys = re.fullmatch(r"local (.+) = unpack\(KEYS\)", first)
    args = re.fullmatch(r"local (.+) = unpack\(ARGV, 1, (\d+)\)", second)
    assert keys is not None and args is not None, (first, second)
    assert keys[1].split(", ") == [f.name for f in fields(TransitionKeys)]
    assert args[1].split(", ") == [f.name for f in fields(TransitionArgs)]
    assert int(args[2]) == len(fields(TransitionArgs))


def test_deadline_encodings() -> None:
    assert Deadline.KEEP.arg() == ""
    assert Deadline.CLEAR.arg() == "del"
    assert Deadline.after(1500).arg() == "+1500"


@pytest.mark.parametrize("status", list(ExecutionStatus))
def test_a_notice_round_trips(status: ExecutionStatus) -> None:
    notice = Notice("exec_1", status, 7, 2)
    assert notice.format() == f"exec_1 {status.value} 7 2"
    assert Notice.parse(notice.format()) == notice
    assert Notice.parse(notice.format().encode()) == notice


@pytest.mark.parametrize(
    "garbage", ["", "a b c", "x running y 1", "x running 1 y", "x weird 1 1", "x queued 1 1 1"]
)
def test_a_notice_parser_refuses_garbage(garbage: str) -> None:
    assert Notice.parse(garbage) is None


VALID = {
    "id": "msg_1",
    "type": "execution.success",
    "tenant": "a",
    "subject": "exec_1",
    "flow": "f",
    "body": "{}",
}


@pytest.mark.parametrize("missing", ["id", "type", "tenant", "subject", "body"])
def test_an_entry_without_a_required_field_is_malformed(missing: str) -> None:
    data = {k.encode(): v.encode() for k, v in VALID.items() if k != missing}
    with pytest.raises(MalformedEntry, match=missing):
        OutboxEntry.parse(b"1-0", data)


def test_an_entry_without_a_flow_or_hook_is_fine() -> None:
    data = {k.encode(): v.encode() for k, v in VALID.items() if k != "flow"}
    assert OutboxEntry.parse(b"1700000000000-3", data) == OutboxEntry(
        id="msg_1",
        type="execution.success",
        tenant="a",
        subject="exec_1",
        flow="",
        body="{}",
        created_ms=1_700_000_000_000,
    )
