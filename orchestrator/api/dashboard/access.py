"""Who is looking at the dashboard, and whether an action may proceed (CSRF).

A browser is signed in by its session cookie (``sessions.py``); a script may send
``Authorization: Bearer <api key>`` exactly as to the API. Either way the viewer is one tenant,
and everything it names is looked up within that tenant (another tenant's id is "not found").

Actions are POSTs. One made with the session cookie must carry the session's CSRF token (form
field ``csrf_token`` or header ``X-CSRF-Token``) and must not come from another site (``Origin``
or ``Sec-Fetch-Site``); one made with a bearer key needs no token, as no browser adds that header
by itself. The login form, which has no session yet, is guarded by a double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from orchestrator.api.auth import authenticate
from orchestrator.api.dashboard.forms import Form, read_form
from orchestrator.api.dashboard.sessions import COOKIE
from orchestrator.api.services import services
from orchestrator.errors import CSRFFailed, Unauthorized

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_COOKIE = "orch_login"


class SignInRequired(Unauthorized):
    """No session and no key: a browser is sent to the login page, anything else gets a 401."""


@dataclass(frozen=True)
class Viewer:
    """The tenant behind a dashboard request, and how it proved it."""

    tenant: str
    csrf: str  # the session's token ("" when signed by a bearer key)
    session_id: str | None = None

    @property
    def by_session(self) -> bool:
        """True for a browser signed in with the login form."""
        return self.session_id is not None


async def viewer(request: Request) -> Viewer:
    """The viewer of `request`: its bearer key's tenant, else its session's; SignInRequired otherwise."""
    if "authorization" in request.headers:
        return Viewer(tenant=await authenticate(request), csrf="")
    session_id = request.cookies.get(COOKIE)
    if session_id:
        session = await services(request).sessions.get(session_id)
        if session is not None:
            return Viewer(tenant=session.tenant, csrf=session.csrf, session_id=session_id)
    raise SignInRequired("sign in to the dashboard")


def same_site(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin, then Sec-Fetch-Site)."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")
    fetch_site = request.headers.get("sec-fetch-site")
    return fetch_site in (None, "same-origin", "none")


def _equal(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def check_csrf(request: Request, who: Viewer, form: Mapping[str, str]) -> None:
    """Refuse (403 csrf_failed) a session's POST without its token or from another site."""
    if not who.by_session:
        return
    if not same_site(request):
        raise CSRFFailed("cross-site request refused")
    presented = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD, "")
    if not _equal(presented, who.csrf):
        raise CSRFFailed("the form's CSRF token is missing or wrong; reload the page and try again")


def new_login_token() -> str:
    """A fresh double-submit token for the login form (cookie and hidden field)."""
    return secrets.token_urlsafe(24)


def check_login_csrf(request: Request, form: Mapping[str, str]) -> None:
    """Refuse a login POST whose hidden token does not match its cookie, or from another site."""
    if not same_site(request):
        raise CSRFFailed("cross-site request refused")
    if not _equal(form.get(CSRF_FIELD, ""), request.cookies.get(LOGIN_COOKIE, "")):
        raise CSRFFailed("the login form expired; reload the page and try again")


async def acting(request: Request) -> tuple[Viewer, Form[str, str]]:
    """For an action (POST): the viewer, its form, and the CSRF check passed (in that order)."""
    who = await viewer(request)
    form = await read_form(request)
    check_csrf(request, who, form)
    return who, form
