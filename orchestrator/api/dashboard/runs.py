"""The Runs and Run pages, their live streams and fragments, and the run actions (cancel, read token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orchestrator.api.dashboard.access import acting, viewer
from orchestrator.api.dashboard.live import run_state, run_stream, runs_stream, wants_stream
from orchestrator.api.dashboard.queries import RunFilter, find_runs, run_view
from orchestrator.api.dashboard.render import BASE, SECURITY_HEADERS, fragment, page, redirect
from orchestrator.api.deliveries import delivery_report
from orchestrator.api.services import services
from orchestrator.errors import RunNotFound
from orchestrator.models import ExecutionStatus
from webhooks.errors import ValidationFailed
from webhooks.ids import is_valid

TOKEN_TTL_CHOICES = (300, 900, 3600, 86400)


def _run_id(request: Request) -> str:
    run_id: str = request.path_params["run_id"]
    if not is_valid(run_id, "exec"):
        raise RunNotFound(f"no execution {run_id}")
    return run_id


def _fragment_response(html: str, status: int = 200) -> Response:
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


async def runs_page(request: Request) -> Response:
    """``GET /dashboard/runs``: newest first, filtered, a page at a time, updated live."""
    who = await viewer(request)
    state = services(request)
    flt = RunFilter.of(request)
    found = await find_runs(state.redis, state.store, tenant=who.tenant, flt=flt)
    return page(
        request,
        "runs.html",
        who=who,
        flt=flt,
        found=found,
        statuses=[s.value for s in ExecutionStatus],
        flows=sorted(f.id for f in state.registry.all()),
        live_url=f"{BASE}/runs/live?{flt.query(cursor='')}",
        next_url=f"{BASE}/runs?{flt.query(cursor=found.next_cursor)}" if found.next_cursor else None,
    )


async def runs_live(request: Request) -> Response:
    """``GET /dashboard/runs/live``: SSE of row updates; without ``Accept: text/event-stream``, the rows."""
    who = await viewer(request)
    state = services(request)
    flt = RunFilter.of(request)
    if wants_stream(request.headers.get("accept", "")):
        return runs_stream(state, who, flt)
    found = await find_runs(state.redis, state.store, tenant=who.tenant, flt=flt)
    return _fragment_response("".join(fragment("_run_row.html", run=run) for run in found.runs))


async def run_page(request: Request) -> Response:
    """``GET /dashboard/runs/{id}``: every field, input/output/error, timeline, deliveries, actions."""
    who = await viewer(request)
    run_id = _run_id(request)
    state = services(request)
    view = await run_view(state.store, run_id, tenant=who.tenant)
    report = await delivery_report(state, run_id, tenant=who.tenant)
    return page(
        request,
        "run.html",
        who=who,
        view=view,
        run=view.run,
        report=report,
        live_url=f"{BASE}/runs/{run_id}/live",
        ttl_choices=TOKEN_TTL_CHOICES,
    )


async def run_live(request: Request) -> Response:
    """``GET /dashboard/runs/{id}/live``: SSE of the page's live part; else that part once, as HTML."""
    who = await viewer(request)
    run_id = _run_id(request)
    state = services(request)
    html, _, _ = await run_state(state, who, run_id)  # a missing or foreign run: 404 before streaming
    if wants_stream(request.headers.get("accept", "")):
        return run_stream(state, who, run_id)
    return _fragment_response(html)


async def run_deliveries(request: Request) -> Response:
    """``GET /dashboard/runs/{id}/deliveries``: the deliveries section (polled by the page while open).

    Answers 286, which tells htmx to stop polling, once the run ended and nothing is pending.
    """
    who = await viewer(request)
    run_id = _run_id(request)
    state = services(request)
    run = await state.store.get(run_id, tenant=who.tenant)
    report = await delivery_report(state, run_id, tenant=who.tenant)
    pending = any(
        e.status == "pending" or (e.matched and e.status is None) for t in report.data for e in t.events
    )
    html = fragment("_deliveries.html", report=report, run=run, csrf=who.csrf)
    polling = "hx-request" in request.headers and run.status.terminal and not pending
    return _fragment_response(html, 286 if polling else 200)


async def cancel(request: Request) -> Response:
    """``POST /dashboard/runs/{id}/cancel``: cancel a queued or running run, then show it."""
    who, _ = await acting(request)
    run_id = _run_id(request)
    await services(request).store.cancel(run_id, tenant=who.tenant)
    return redirect(f"{BASE}/runs/{run_id}")


async def make_token(request: Request) -> Response:
    """``POST /dashboard/runs/{id}/tokens``: a per-run read token, shown once with how to use it."""
    who, form = await acting(request)
    run_id = _run_id(request)
    state = services(request)
    await state.store.get_json_status(run_id, tenant=who.tenant)
    raw = form.get("ttl", "900")
    ttl = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 0
    if ttl not in TOKEN_TTL_CHOICES:
        raise ValidationFailed.field("ttl", f"must be one of {', '.join(map(str, TOKEN_TTL_CHOICES))}")
    token = await state.tokens.issue(tenant=who.tenant, run_id=run_id, ttl_seconds=ttl)
    origin = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return page(request, "token.html", who=who, token=token, origin=origin)
