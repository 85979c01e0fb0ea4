"""Every dashboard page loads in a real browser with no console error and no failed request, light and dark.

The stack is real: Redis, the API on loopback, an in-process worker and dispatcher delivering to
real receivers (one succeeding, one failing). Each page is screenshotted to docs/screenshots/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, expect
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.settings import Settings
from tests.conftest import KEY_A, ServedApp, running_worker, tenant_client, wait_for
from tests.dashboard.conftest import open_page, screenshot, sign_in, watch
from tests.receiver import Receiver
from tests.webhooks.helpers import running_dispatcher


@dataclass
class Seeded:
    """What the pages show: runs in every state, a good and a failing endpoint with deliveries."""

    runs: dict[str, str]  # status -> run id
    good: str
    bad: str


@pytest.fixture
async def seeded(
    api_server: ServedApp, redis: Redis, settings: Settings, registry: Registry
) -> AsyncIterator[Seeded]:
    good, bad = await Receiver(default=200).start(), await Receiver(default=500).start()
    try:
        async with tenant_client(api_server.url) as api:
            ok = (await api.post("/v1/webhooks", json={"url": good.url, "description": "billing"})).json()
            failing = (await api.post("/v1/webhooks", json={"url": bad.url, "description": "crm"})).json()
            runs: dict[str, str] = {}
            async with running_dispatcher(redis), running_worker(settings, registry):
                for flow, body, name in (
                    ("echo", {"text": "hello"}, "echo"),
                    ("fail", {}, "failed"),
                    (
                        "invoice-extraction",
                        {"document": {"base64": "SW52b2ljZTogMQ=="}, "stepDelay": 0},
                        "invoice",
                    ),
                ):
                    created = await api.post(
                        f"/v1/flows/{flow}/runs", json={"input": body, "metadata": {"customer": "acme"}}
                    )
                    run = created.json()
                    done = (await api.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 20})).json()
                    assert done["status"] in ("success", "failed")
                    runs[name] = run["id"]

                async def settled() -> bool:
                    page = await api.get(
                        f"/v1/webhooks/{failing['id']}/deliveries", params={"status": "pending"}
                    )
                    return page.json()["data"] == []

                await wait_for(settled, timeout=20)
            slow = (await api.post("/v1/flows/slow/runs", json={"input": {"seconds": 1}})).json()
            runs["queued"] = slow["id"]
            yield Seeded(runs=runs, good=ok["id"], bad=failing["id"])
    finally:
        await good.stop()
        await bad.stop()


PAGES = [
    ("overview", "/dashboard", "Overview"),
    ("runs", "/dashboard/runs", "Runs"),
    ("run", "/dashboard/runs/{echo}", "Run"),
    ("run-failed", "/dashboard/runs/{failed}", "Run"),
    ("endpoints", "/dashboard/endpoints", "Endpoints"),
    ("endpoint", "/dashboard/endpoints/{bad}", "Endpoint"),
    ("deliveries", "/dashboard/endpoints/{bad}/deliveries", "Deliveries"),
    ("flows", "/dashboard/flows", "Flows"),
    ("flow", "/dashboard/flows/invoice-extraction", "Flow"),
]


async def test_every_page_loads_with_no_console_error_and_no_failed_request(
    context: BrowserContext, api_server: ServedApp, seeded: Seeded
) -> None:
    ids = {**seeded.runs, "good": seeded.good, "bad": seeded.bad}
    for name, path, heading in PAGES:
        watched = await open_page(context, api_server.url + path.format(**ids))
        page = watched.page
        await expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        if name == "overview":
            # Chart.js drew each chart (a canvas it sized), and the numbers are there without it too.
            for chart in ("hour", "day", "deliveries", "backlog"):
                canvas = page.locator(f"canvas[data-chart={chart}]")
                await wait_for(
                    lambda c=canvas: c.evaluate("el => el.width > 0 && !!Chart.getChart(el)"), timeout=5
                )
            await expect(page.get_by_text("Failing and disabled endpoints")).to_be_visible()
            await expect(
                page.locator("section", has_text="Failing and disabled").get_by_role("link")
            ).to_have_count(1)
        if name == "run":
            await expect(page.locator("#timeline li")).to_have_count(4)  # queued, running, progress, success
            await expect(page.locator("#deliveries")).to_contain_text("execution.success")
        if name == "deliveries":
            await expect(page.locator("tr[data-delivery=failed]").first).to_be_visible()
        await screenshot(page, name)
        watched.check()
        await page.close()


async def test_the_login_page_and_dark_mode(browser: Browser, api_server: ServedApp, seeded: Seeded) -> None:
    light = await browser.new_context(color_scheme="light", viewport={"width": 1000, "height": 700})
    dark = await browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 900})
    try:
        watched = await open_page(light, f"{api_server.url}/dashboard/login")
        await screenshot(watched.page, "login")
        light_bg = await watched.page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        watched.check()
        await sign_in(dark, api_server.url)
        watched = await open_page(dark, f"{api_server.url}/dashboard/runs/{seeded.runs['echo']}")
        dark_bg = await watched.page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
        assert light_bg == "rgb(255, 255, 255)" and dark_bg == "rgb(21, 24, 28)"
        await screenshot(watched.page, "run-dark")
        watched.check()
    finally:
        await light.close()
        await dark.close()


async def test_pages_read_without_javascript(browser: Browser, api_server: ServedApp, seeded: Seeded) -> None:
    ctx = await browser.new_context(java_script_enabled=False)
    try:
        page = await ctx.new_page()
        watched = watch(page)
        await page.goto(f"{api_server.url}/dashboard/runs/{seeded.runs['echo']}")
        assert page.url.endswith("/dashboard/login")  # no session: the form, which needs no script either
        await page.get_by_label("API key").fill(KEY_A)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url("**/dashboard")
        await page.goto(f"{api_server.url}/dashboard/runs/{seeded.runs['echo']}")
        await expect(page.locator("#timeline li")).to_have_count(4)
        await expect(page.locator("#run-live")).to_contain_text("success")
        await page.goto(f"{api_server.url}/dashboard")
        await expect(page.locator("table.compact").first).to_contain_text("success")  # the chart's numbers
        watched.check()
    finally:
        await ctx.close()


async def test_the_pages_are_keyboard_reachable(
    context: BrowserContext, api_server: ServedApp, seeded: Seeded
) -> None:
    watched = await open_page(context, f"{api_server.url}/dashboard")
    page = watched.page
    reached: list[str] = []
    for _ in range(7):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.textContent.trim()"))
    assert reached == [
        "Skip to content",
        "webhook-orchestrator",
        "Overview",
        "Runs",
        "Endpoints",
        "Flows",
        "Sign out",
    ]
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")  # on "Flows"
    await page.wait_for_url("**/dashboard/flows")
    # Skip to content moves the focus past the navigation.
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    # The Runs filters work from the keyboard alone; nothing interactive is taken out of the tab order.
    await page.goto(f"{api_server.url}/dashboard/runs")
    assert await page.locator("a[tabindex^='-'], button[tabindex^='-'], input[tabindex^='-']").count() == 0
    await page.get_by_label("Status").focus()
    await page.keyboard.press("ArrowDown")  # any -> queued
    await page.get_by_role("button", name="Filter").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**status=queued**")
    await expect(page.locator("#run-rows tr")).to_have_count(1)
    watched.check()


async def test_api_clients_get_the_json_envelope_on_dashboard_errors(
    api_server: ServedApp, seeded: Seeded
) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        resp = await anon.get("/dashboard/runs")
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        page = await anon.get("/dashboard/runs", headers={"accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"
