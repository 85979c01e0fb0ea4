"""Live pages over server-sent events: the Runs list and one Run, pushed by the transition notices.

Both ride on the API process's one transition subscription (``api.waiters``): the Runs list taps
every notice and shows those of its tenant that pass its filters; the Run page waits on its run.
Each event carries HTML rendered by the same templates as the page, so the script only swaps it
in. What is read after registering cannot miss a transition; a stream of a finished run ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from orchestrator.api.dashboard.access import Viewer
from orchestrator.api.dashboard.queries import RunFilter, run_view
from orchestrator.api.dashboard.render import fragment
from orchestrator.api.services import Services
from orchestrator.errors import RunNotFound
from orchestrator.models import Execution

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event whose data is a JSON object."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def wants_stream(accept: str) -> bool:
    """True when the client asked for an event stream (others get the same data once, as HTML)."""
    return "text/event-stream" in accept


def runs_stream(state: Services, who: Viewer, flt: RunFilter) -> StreamingResponse:
    """Every transition of the viewer's runs that passes `flt`: a ``run`` event with the row's HTML."""

    async def stream() -> AsyncIterator[str]:
        async with state.waiters.tap() as tap:
            yield "retry: 2000\n\n"
            while True:
                got = await tap.take(state.settings.sse_heartbeat_seconds)
                if got is None:
                    yield ": heartbeat\n\n"
                    continue
                run_ids, missed = got
                if missed:  # transitions went unheard (a resubscribe, or a flood): the page re-reads
                    yield sse("resync", {})
                    continue
                for run_id in run_ids:
                    try:
                        body, _ = await state.store.get_json_status(run_id, tenant=who.tenant)
                    except RunNotFound:
                        continue  # another tenant's run, or one already gone
                    run = Execution[Any].model_validate_json(body)
                    match = flt.matches(run)
                    html = fragment("_run_row.html", run=run) if match else ""
                    yield sse("run", {"id": run.id, "status": run.status.value, "match": match, "html": html})

    return StreamingResponse(stream(), media_type="text/event-stream", headers=HEADERS)


async def run_state(state: Services, who: Viewer, run_id: str) -> tuple[str, bool, int]:
    """The live part of the Run page as HTML, whether the run is terminal, and its sequence."""
    view = await run_view(state.store, run_id, tenant=who.tenant)
    html = fragment("_run_live.html", view=view, run=view.run, csrf=who.csrf)
    return html, view.run.status.terminal, view.run.sequence


def run_stream(state: Services, who: Viewer, run_id: str) -> StreamingResponse:
    """A ``state`` event with the Run page's live part after every transition; ends once terminal."""

    async def stream() -> AsyncIterator[str]:
        shown = -1
        async with state.waiters.watch(run_id) as waiter:
            yield "retry: 2000\n\n"
            while True:
                try:
                    html, terminal, sequence = await run_state(state, who, run_id)
                except RunNotFound:  # expired by retention while watched
                    yield sse("gone", {})
                    return
                if sequence != shown:
                    yield sse("state", {"html": html, "terminal": terminal, "sequence": sequence})
                    shown = sequence
                if terminal:
                    return
                if not await waiter.wait(state.settings.sse_heartbeat_seconds):
                    yield ": heartbeat\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=HEADERS)
