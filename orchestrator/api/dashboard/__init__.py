"""The web dashboard, served by the API at ``/dashboard``: runs, live timelines, deliveries, endpoints, flows.

Server-rendered HTML (Jinja2 templates in ``templates/``) with two vendored scripts (htmx for
in-place actions, Chart.js for the Overview) and one of ours (``static/dashboard.js``); every asset
ships in the package. See docs/dashboard.md.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.api.dashboard import deliveries, endpoints, flows, home, runs
from orchestrator.api.dashboard.render import BASE, STATIC, error_page, wants_html

__all__ = ["BASE", "dashboard_routes", "error_page", "wants_html"]


def dashboard_routes() -> list[BaseRoute]:
    """Every page, fragment, stream and action of the dashboard, and its static files."""
    get, post = ["GET"], ["POST"]
    ep = f"{BASE}/endpoints/{{endpoint_id}}"
    return [
        Route(BASE, home.overview_page, methods=get),
        Route(f"{BASE}/login", home.login_page, methods=get),
        Route(f"{BASE}/login", home.login, methods=post),
        Route(f"{BASE}/logout", home.logout, methods=post),
        Route(f"{BASE}/runs", runs.runs_page, methods=get),
        Route(f"{BASE}/runs/live", runs.runs_live, methods=get),
        Route(f"{BASE}/runs/{{run_id}}", runs.run_page, methods=get),
        Route(f"{BASE}/runs/{{run_id}}/live", runs.run_live, methods=get),
        Route(f"{BASE}/runs/{{run_id}}/deliveries", runs.run_deliveries, methods=get),
        Route(f"{BASE}/runs/{{run_id}}/cancel", runs.cancel, methods=post),
        Route(f"{BASE}/runs/{{run_id}}/tokens", runs.make_token, methods=post),
        Route(f"{BASE}/endpoints", endpoints.endpoints_page, methods=get),
        Route(f"{BASE}/endpoints", endpoints.create, methods=post),
        Route(ep, endpoints.endpoint_page, methods=get),
        Route(ep, endpoints.change, methods=post),
        Route(f"{ep}/enabled", endpoints.set_enabled, methods=post),
        Route(f"{ep}/delete", endpoints.delete, methods=post),
        Route(f"{ep}/rotate", endpoints.rotate, methods=post),
        Route(f"{ep}/test", endpoints.send_test, methods=post),
        Route(f"{ep}/deliveries", deliveries.deliveries_page, methods=get),
        Route(f"{ep}/deliveries/{{message_id}}/retry", deliveries.retry, methods=post),
        Route(f"{ep}/recover", deliveries.recover, methods=post),
        Route(f"{BASE}/flows", flows.flows_page, methods=get),
        Route(f"{BASE}/flows/{{flow_id}}", flows.flow_page, methods=get),
        Route(f"{BASE}/flows/{{flow_id}}/runs", flows.start_run, methods=post),
        Mount(f"{BASE}/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
