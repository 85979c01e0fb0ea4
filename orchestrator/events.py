"""Every event type name and set, and the two renderings of one transition (log entry, wire body).

Names follow the ``resource.action`` form of Standard Webhooks and Svix (``execution.success``).
"""

from __future__ import annotations

import json
from datetime import datetime

from orchestrator.models import TERMINAL_STATUSES, ExecutionStatus
from webhooks import compression
from webhooks.models import format_timestamp

PREFIX = "execution."
PROGRESS = "execution.progress"
TEST = "webhook.test"
STATUS_EVENTS = tuple(PREFIX + s.value for s in ExecutionStatus)
# The events after which a run never changes again (an SSE stream ends after one).
TERMINAL_EVENTS = frozenset(PREFIX + s.value for s in TERMINAL_STATUSES)
# What an endpoint receives when it names no events: every status change, not progress.
DEFAULT_EVENTS = STATUS_EVENTS
# What a run's own `webhook: {events}` may ask for.
RUN_WEBHOOK_EVENTS = (*STATUS_EVENTS, PROGRESS)
# What an endpoint may subscribe to.
ALL_EVENTS = (*STATUS_EVENTS, PROGRESS, TEST)
# Sent at most once per interval per run and endpoint (webhooks.fanout coalesces them).
COALESCED_EVENTS = (PROGRESS,)


# How runs' snapshots, event log entries and webhook bodies are stored (``webhooks.compression``):
# deflate with this preset dictionary, the usual JSON of an execution event. Part of the stored
# format: never edit it (tests/test_events.py pins it); a better one is registered under a new name.
CODEC = "ex1"
CODEC_DICTIONARY = (
    b'"execution.running""execution.failed""execution.cancelled""execution.success""running""failed"'
    b'"cancelled""success","error":{"code":"","message":"","details":{}},"output":{"'
    b'{"id":"msg_","sequence":1,"type":"execution.progress","timestamp":"2026-01-01T00:00:00.000Z",'
    b'"data":{"id":"exec_","flowId":"","status":"queued","createdAt":"2026-01-01T00:00:00.000Z",'
    b'"startedAt":null,"completedAt":null,"duration":null,"output":null,"metrics":{"tokensUsed":0,'
    b'"cost":0.0,"stepsRun":0,"stepsTotal":null,"lastStep":null},"traceId":"","metadata":{},'
    b'"error":null,"attempt":1,"sequence":1}}'
)
compression.register(CODEC, CODEC_DICTIONARY)


def pack(text: str) -> str | bytes:
    """`text` as runs store it (packed with CODEC when long enough; see ``webhooks.compression``)."""
    return compression.pack(text, CODEC)


def status_event(status: ExecutionStatus) -> str:
    """Event type of a transition into `status`, e.g. ``execution.success``."""
    return PREFIX + status.value


def render(data: str, *, sequence: int, message_id: str, event_type: str, at: datetime) -> tuple[str, str]:
    """Return (log entry JSON with id and sequence, wire body JSON ``{type, timestamp, data}``).

    `data` is the execution's JSON, embedded as text in both so it is serialized only once.
    """
    head = f'"type":{json.dumps(event_type)},"timestamp":"{format_timestamp(at)}","data":{data}'
    entry = f'{{"id":"{message_id}","sequence":{sequence},{head}}}'
    return entry, "{" + head + "}"


def snapshot(entry: bytes | str) -> bytes:
    """The execution JSON an event log entry (:func:`render`'s first form, packed or not) carries.

    A run keeps no other copy of its current snapshot: it is its last entry's ``data`` (issue 15).
    The entry's other fields come first and are ours (ids, an event type, a timestamp), so the
    first ``,"data":`` starts it; the entry's closing brace ends it.
    """
    raw = compression.expand(entry)
    start = raw.index(b',"data":') + len(b',"data":')
    return raw[start:-1]
