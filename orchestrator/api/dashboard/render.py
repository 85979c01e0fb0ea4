"""Rendering dashboard pages: the Jinja environment, its filters, the headers every page carries.

Pages are served with a Content-Security-Policy that allows only this origin's scripts and styles
(no inline script, no eval), are never cached, and name no third-party host: every asset ships
in ``static/``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from orchestrator import __version__
from orchestrator.api.dashboard.access import CSRF_FIELD, CSRF_HEADER, Viewer

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
BASE = "/dashboard"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on form POSTs.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
# A JSON document larger than this is shown as text, not as a folding tree.
MAX_TREE_CHARS = 200_000


def when(value: str | datetime | None) -> str:
    """An RFC 3339 timestamp as ``2026-11-28 23:43:01.123 UTC`` ('' for none)."""
    if value is None or value == "":
        return ""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d} UTC"


def duration(ms: float | int | None) -> str:
    """Milliseconds as a short human duration: ``850 ms``, ``2.4 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if ms is None:
        return ""
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def pretty(value: Any) -> str:
    """JSON, indented."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def is_tree(value: Any) -> bool:
    """Whether `value` is a non-empty object or array small enough to show as a folding tree."""
    return isinstance(value, dict | list) and bool(value) and len(json.dumps(value)) <= MAX_TREE_CHARS


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=when, duration=duration, pretty=pretty)
ENV.tests["tree"] = is_tree
ENV.globals.update(
    base=BASE,
    version=__version__,
    csrf_field=CSRF_FIELD,
    csrf_header=CSRF_HEADER,
    json_script=lambda value: json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e"),
)


def fragment(template: str, **context: Any) -> str:
    """A template rendered to text (a partial for live updates, or a whole page)."""
    return ENV.get_template(template).render(**context)


def page(
    request: Request,
    template: str,
    *,
    who: Viewer | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """A full page for `who` (None: the login page), with the security headers."""
    body = fragment(
        template,
        request=request,
        who=who,
        csrf=who.csrf if who is not None else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def redirect(path: str) -> Response:
    """303 See Other to a dashboard path (after an action: the browser GETs the page again)."""
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def wants_html(request: Request) -> bool:
    """True for a browser's navigation or an htmx request (they get pages, not the JSON envelope)."""
    return "text/html" in request.headers.get("accept", "") or "hx-request" in request.headers


def error_page(request: Request, *, status: int, code: str, message: str) -> Response:
    """An error as a page (401 sends a browser to the login form instead)."""
    if status == 401 and "hx-request" not in request.headers:
        return redirect(f"{BASE}/login")
    title = {403: "Refused", 404: "Not found", 409: "Conflict", 422: "Invalid input"}.get(status, "Error")
    return page(request, "error.html", who=None, status=status, title=title, code=code, message=message)
