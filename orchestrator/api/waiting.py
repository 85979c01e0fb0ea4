"""Waiting without polling: long-poll ``/wait``, ``Prefer: wait``, the event log and its SSE stream.

Every wait parks on an in-process Waiter (see ``waiters.py``) and is released by the transition's
own publish; a waiting request also watches for its client going away and then frees its waiter.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from orchestrator import events
from orchestrator.api.services import services
from orchestrator.api.waiters import Waiters
from orchestrator.errors import ValidationFailed
from orchestrator.models import ExecutionStatus
from orchestrator.runs.store import RunStore

MAX_WAIT_SECONDS = 60.0
DEFAULT_WAIT_SECONDS = 30.0
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # a JSON number, less the sign
_PREFER_WAIT = re.compile(r"(?:^|[,;])\s*wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?\s*(?:$|[,;])", re.IGNORECASE)
T = TypeVar("T")


def prefer_wait(request: Request) -> float | None:
    """Seconds asked for by ``Prefer: wait=N`` (RFC 7240), capped at 60; None when absent or unparsable."""
    header = request.headers.get("prefer")
    if not header:
        return None
    match = _PREFER_WAIT.search(header)
    if match is None:
        return None
    return min(float(match.group(1)), MAX_WAIT_SECONDS)


async def until_disconnected(request: Request) -> None:
    """Return when the client has gone away (the body, if any, must have been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`, cancelling it (and so freeing its waiter) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()


async def wait_terminal(
    store: RunStore, waiters: Waiters, run_id: str, *, tenant: str, seconds: float
) -> tuple[bytes, ExecutionStatus]:
    """The run's JSON as soon as it is terminal, else as it stands after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with waiters.watch(run_id) as waiter:
        # Registered before the read: a transition between the two still wakes us.
        body, status = await store.get_json_status(run_id, tenant=tenant)
        while not status.terminal:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await waiter.wait(remaining):
                return await store.get_json_status(run_id, tenant=tenant)
            if waiter.status is None or ExecutionStatus(waiter.status).terminal:
                body, status = await store.get_json_status(run_id, tenant=tenant)
    return body, status


def wait_seconds(request: Request) -> float:
    """The ``timeout`` query parameter of /wait: 0..60 seconds in ASCII decimals, default 30."""
    raw = request.query_params.get("timeout")
    if raw is None or raw == "":
        return DEFAULT_WAIT_SECONDS
    # float() alone would also take "nan", "1_0", " 5" and other scripts' digits (Arabic-Indic 10).
    value = float(raw) if _SECONDS.fullmatch(raw) else -1.0
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise ValidationFailed.field("timeout", f"must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}")
    return value


async def respond_when_terminal(
    request: Request, run_id: str, *, tenant: str, seconds: float, headers: dict[str, str] | None = None
) -> Response:
    """200 with the terminal run, or 202 with its state after `seconds`; nothing if the client left."""
    store = services(request).store
    waiters = services(request).waiters
    result = await unless_disconnected(
        request, wait_terminal(store, waiters, run_id, tenant=tenant, seconds=seconds)
    )
    if result is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    body, status = result
    return Response(
        body, status_code=200 if status.terminal else 202, media_type="application/json", headers=headers
    )


def last_event_id(request: Request) -> int:
    """The sequence to resume after: ``Last-Event-ID`` header, or ``?after=`` (0 = from the start)."""
    header = request.headers.get("last-event-id")
    name, raw = ("Last-Event-ID", header) if header else ("after", request.query_params.get("after") or "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise ValidationFailed.field(name, "must be an event sequence number", "int")
    return int(raw)


def _sse(entry: bytes) -> tuple[str, int, str]:
    doc = json.loads(entry)
    sequence = int(doc["sequence"])
    text = f"id: {sequence}\nevent: {doc['type']}\ndata: {entry.decode()}\n\n"
    return text, sequence, str(doc["type"])


def event_stream(
    store: RunStore, waiters: Waiters, run_id: str, *, tenant: str, after: int, heartbeat: float
) -> Callable[[], AsyncIterator[str]]:
    """An SSE generator: events after `after`, live, with heartbeats, ending after the terminal one."""

    async def stream() -> AsyncIterator[str]:
        sent = after
        async with waiters.watch(run_id) as waiter:
            yield "retry: 1000\n\n"
            while True:
                # Read after registering: nothing committed from here on can be missed.
                entries, status = await store.events(run_id, tenant=tenant, after=sent)
                for entry in entries:
                    text, sequence, event_type = _sse(entry)
                    if sequence <= sent:
                        continue
                    yield text
                    sent = sequence
                    if event_type in events.TERMINAL_EVENTS:
                        return
                if status.terminal:
                    return  # the terminal event was sent before this connection (resume after it)
                if not await waiter.wait(heartbeat):
                    yield ": heartbeat\n\n"

    return stream


async def run_events(request: Request, run_id: str, *, tenant: str) -> Response:
    """``GET /v1/runs/{id}/events``: the ordered log as JSON, or a live SSE stream."""
    store = services(request).store
    accept = request.headers.get("accept", "")
    after = last_event_id(request)
    if "text/event-stream" not in accept:
        entries, _ = await store.events(run_id, tenant=tenant, after=after)
        body = b'{"data":[' + b",".join(entries) + b'],"nextCursor":null}'
        return Response(body, media_type="application/json")
    # Check once here so a missing or foreign run is a plain 404, not a broken stream.
    await store.get_json_status(run_id, tenant=tenant)
    generator = event_stream(
        store,
        services(request).waiters,
        run_id,
        tenant=tenant,
        after=after,
        heartbeat=services(request).settings.sse_heartbeat_seconds,
    )
    return StreamingResponse(
        generator(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
