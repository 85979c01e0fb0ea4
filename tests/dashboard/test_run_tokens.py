"""A per-run read token made on the Run page: a page of one's own, on another origin, shows the run live
with it (examples/run_status_page.html, as docs/dashboard.md tells); the token reads nothing else.
"""

from __future__ import annotations

import httpx
from aiohttp import web
from playwright.async_api import BrowserContext, expect

from orchestrator.flows import Registry
from orchestrator.settings import Settings
from tests.conftest import EXAMPLES, ServedApp, running_worker
from tests.dashboard.conftest import open_page, screenshot, watch
from tests.receiver import Receiver


async def test_a_run_token_shows_its_run_live_on_another_origin_and_reads_nothing_else(
    context: BrowserContext,
    api_server: ServedApp,
    client: httpx.AsyncClient,
    settings: Settings,
    registry: Registry,
) -> None:
    run_id = (await client.post("/v1/flows/slow/runs", json={"input": {"seconds": 0.3}})).json()["id"]
    other_run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "other"}})).json()["id"]
    run = await open_page(context, f"{api_server.url}/dashboard/runs/{run_id}")
    await run.page.get_by_label("Valid for").select_option("900")
    await run.page.get_by_role("button", name="Make a read token").click()
    await expect(run.page.get_by_role("heading", level=1)).to_contain_text("Read token")
    token = (await run.page.get_by_label("Token").input_value()).strip()
    assert token.startswith("rt_")
    await screenshot(run.page, "run-token")
    run.check()

    page_html = (EXAMPLES / "run_status_page.html").read_text()

    async def serve_page(request: web.Request) -> web.StreamResponse:
        return web.Response(text=page_html, content_type="text/html")

    site = await Receiver(default=serve_page).start()  # another origin: another port
    try:
        page = await context.browser.new_page()  # type: ignore[union-attr]  # no dashboard cookie at all
        watched = watch(page)
        await page.goto(f"{site.url}#api={api_server.url}&run={run_id}&token={token}")
        events = page.locator("#events li")
        await expect(events.first).to_have_attribute("data-type", "queued")
        async with running_worker(settings, registry):
            await expect(page.locator("#status")).to_have_text("success", timeout=20_000)
        types = await events.evaluate_all("items => items.map(li => li.dataset.type)")
        assert [t for t in types if t != "progress"] == ["queued", "running", "success"]
        watched.check()
        await page.close()
    finally:
        await site.stop()

    async with httpx.AsyncClient(
        base_url=api_server.url, headers={"Authorization": f"Bearer {token}"}
    ) as reader:
        assert (await reader.get(f"/v1/runs/{run_id}")).json()["status"] == "success"
        assert len((await reader.get(f"/v1/runs/{run_id}/events")).json()["data"]) >= 3
        # Nothing else: another run of the same tenant, any list, any other view, any action.
        assert (await reader.get(f"/v1/runs/{other_run}")).status_code == 404
        assert (await reader.get(f"/v1/runs/{other_run}/events")).status_code == 404
        for method, path in (
            ("GET", "/v1/runs"),
            ("GET", f"/v1/runs/{run_id}/wait"),
            ("GET", f"/v1/runs/{run_id}/deliveries"),
            ("POST", f"/v1/runs/{run_id}/cancel"),
            ("POST", f"/v1/runs/{run_id}/tokens"),
            ("GET", "/v1/webhooks"),
            ("GET", "/v1/flows"),
            ("GET", "/dashboard/runs"),
            ("GET", f"/dashboard/runs/{run_id}"),
        ):
            answer = await reader.request(method, path)
            assert answer.status_code == 401, (method, path, answer.text)
    # A signed-out browser with only the token in a query string reads no dashboard page either.
    anonymous = await context.browser.new_page()  # type: ignore[union-attr]
    await anonymous.goto(f"{api_server.url}/dashboard/runs/{run_id}?access_token={token}")
    assert anonymous.url.endswith("/dashboard/login")
    await anonymous.close()
