"""Signing in and out, and the Overview page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from orchestrator.api.dashboard.access import LOGIN_COOKIE, acting, check_login_csrf, new_login_token, viewer
from orchestrator.api.dashboard.forms import read_form
from orchestrator.api.dashboard.render import BASE, page, redirect
from orchestrator.api.dashboard.sessions import COOKIE, COOKIE_PATH
from orchestrator.api.dashboard.stats import overview
from orchestrator.api.services import services

MAX_KEY_CHARS = 512


def _login_form(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = new_login_token()
    response = page(request, "login.html", who=None, status=status, login_token=token, error=error)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def login_page(request: Request) -> Response:
    """``GET /dashboard/login``: the form that takes an API key (POSTed, never in a URL)."""
    return _login_form(request)


async def login(request: Request) -> Response:
    """``POST /dashboard/login`` (``api_key``): check the key once, start a session, go to the Overview."""
    form = await read_form(request)
    check_login_csrf(request, form)
    key = form.get("api_key", "").strip()
    state = services(request)
    tenant = await state.keyring.tenant_for(key) if 0 < len(key) <= MAX_KEY_CHARS else None
    if tenant is None:
        return _login_form(request, error="That API key is not known.", status=401)
    session_id, _ = await state.sessions.create(tenant)
    response = redirect(BASE)
    response.set_cookie(
        COOKIE,
        session_id,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


async def logout(request: Request) -> Response:
    """``POST /dashboard/logout``: end the session and forget the cookie."""
    who, _ = await acting(request)
    if who.session_id is not None:
        await services(request).sessions.end(who.session_id)
    response = redirect(f"{BASE}/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


async def overview_page(request: Request) -> Response:
    """``GET /dashboard``: runs per status (hour, day), delivery success, backlogs, troubled endpoints."""
    who = await viewer(request)
    state = services(request)
    endpoints, _ = state.webhooks.stores()
    found = await overview(
        state.redis, who.tenant, await endpoints.for_tenant(who.tenant), now_ms=state.clock.now_ms()
    )
    return page(request, "overview.html", who=who, data=found, charts=found.charts())
