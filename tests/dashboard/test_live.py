"""Live pages in a real browser: a run created during the test appears on the Runs page, and its
timeline fills in (queued, running, success, in order) without a reload, pushed over SSE.
"""

from __future__ import annotations

import httpx
from playwright.async_api import BrowserContext, expect

from orchestrator.flows import Registry
from orchestrator.settings import Settings
from tests.conftest import ServedApp, running_worker, tenant_client, wait_for
from tests.dashboard.conftest import open_page, screenshot

NOT_RELOADED = "window.__stillThere === 1"


async def test_a_new_run_appears_and_its_timeline_fills_in_live(
    context: BrowserContext, api_server: ServedApp, settings: Settings, registry: Registry
) -> None:
    runs = await open_page(context, f"{api_server.url}/dashboard/runs")
    await runs.page.evaluate("window.__stillThere = 1")
    await expect(runs.page.locator("#live-status")).to_have_text("Updated live as runs change.")
    async with tenant_client(api_server.url) as api:
        # No worker yet: the run stays queued while the Run page opens.
        created = await api.post(
            "/v1/flows/slow/runs", json={"input": {"seconds": 0.5}, "metadata": {"k": "v"}}
        )
        run_id = created.json()["id"]
        row = runs.page.locator(f"#run-{run_id}")
        await expect(row).to_have_attribute("data-status", "queued")  # inserted live, at the top
        assert await runs.page.locator("#run-rows tr").first.get_attribute("data-run-id") == run_id

        run = await open_page(context, f"{api_server.url}/dashboard/runs/{run_id}")
        await run.page.evaluate("window.__stillThere = 1")
        timeline = run.page.locator("#timeline li")
        await expect(timeline).to_have_count(1)
        await expect(timeline.first).to_have_attribute("data-event", "queued")

        seen: list[list[str]] = []

        async def status_events() -> list[str]:
            labels = await timeline.evaluate_all("items => items.map(li => li.dataset.event)")
            if not seen or seen[-1] != labels:
                seen.append(labels)
            return [label for label in labels if label != "progress"]

        async def ended() -> bool:
            return await status_events() == ["queued", "running", "success"]

        async with running_worker(settings, registry):
            await wait_for(ended, timeout=20)
            await expect(row).to_have_attribute("data-status", "success")
        # It filled in step by step: a state with running but no success yet was shown.
        assert any("running" in s and "success" not in s for s in seen), seen
        assert await run.page.evaluate(NOT_RELOADED) and await runs.page.evaluate(NOT_RELOADED)
        await expect(run.page.locator("#run-live .status").first).to_have_text("success")
        await expect(run.page.locator("#live-status")).to_have_text("The run has ended.")
        times = await run.page.locator("#timeline time").evaluate_all("ts => ts.map(t => t.dateTime)")
        assert times == sorted(times)
        await screenshot(run.page, "run-live")
        run.check()
        runs.check()


async def test_the_runs_stream_shows_only_the_viewers_runs_that_pass_the_filters(
    context: BrowserContext, api_server: ServedApp, client_b: httpx.AsyncClient
) -> None:
    page = await open_page(context, f"{api_server.url}/dashboard/runs?flow=echo")
    await page.page.evaluate("window.__stillThere = 1")
    await expect(page.page.locator("#live-status")).to_have_text("Updated live as runs change.")
    async with tenant_client(api_server.url) as api:
        other_flow = (await api.post("/v1/flows/noop/runs", json={"input": {}})).json()["id"]
        other_tenant = (await client_b.post("/v1/flows/echo/runs", json={"input": {"text": "b"}})).json()[
            "id"
        ]
        mine = (await api.post("/v1/flows/echo/runs", json={"input": {"text": "a"}})).json()["id"]
    await expect(page.page.locator(f"#run-{mine}")).to_be_visible()
    # Events are sent in order, so by the time A's echo run shows, the two before it were passed over.
    assert await page.page.locator(f"#run-{other_flow}").count() == 0
    assert await page.page.locator(f"#run-{other_tenant}").count() == 0
    assert await page.page.evaluate(NOT_RELOADED)
    page.check()
