"""Browser fixtures: Debian's chromium driven by Playwright, a signed-in context, a watched page.

The browser is never downloaded: Playwright launches ``/usr/bin/chromium`` (``.ci/system-deps``
installs Debian's ``chromium`` package when it is missing and the user is root). Without it these
tests fail, never skip. Playwright gives each launch a fresh temporary profile (user data dir).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)
from redis.asyncio import Redis

from tests.conftest import KEY_A, ServedApp

CHROMIUM = os.environ.get("ORCH_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# `make screenshots` refreshes the committed ones (docs/screenshots); a plain test run writes them
# elsewhere, so running the suite never leaves the working tree changed.
SCREENSHOTS = Path(os.environ.get("ORCH_SCREENSHOTS_DIR") or Path(tempfile.gettempdir()) / "orch-screenshots")
SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once per session, before the loop has work)
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (as root: apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Watched:
    """A page and every problem it showed: console errors, page errors, failed or refused requests."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Fail with every problem seen so far."""
        assert self.problems == [], "\n".join(self.problems)


def watch(page: Page) -> Watched:
    """Record `page`'s console errors, uncaught errors, failed requests and 4xx/5xx answers."""
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.problems.append(f"console error: {message.text}")

    def on_failed(request: Request) -> None:
        # A live stream stays open until its page goes: leaving the page aborts it, which is no failure.
        if request.resource_type == "eventsource" and request.failure == "net::ERR_ABORTED":
            return
        watched.problems.append(f"request failed: {request.method} {request.url} ({request.failure})")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            watched.problems.append(f"answer {response.status}: {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.problems.append(f"page error: {error}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    return watched


async def sign_in(context: BrowserContext, base_url: str, key: str = KEY_A) -> None:
    """Sign in through the login form, as a person would."""
    page = await context.new_page()
    watched = watch(page)
    await page.goto(f"{base_url}/dashboard/login")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r"/dashboard$"))
    watched.check()
    await page.close()


@pytest.fixture
async def context(browser: Browser, api_server: ServedApp, redis: Redis) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (its own cookies) signed in as tenant A (after the test's flushdb)."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    try:
        await sign_in(ctx, api_server.url)
        yield ctx
    finally:
        await ctx.close()


async def open_page(context: BrowserContext, url: str) -> Watched:
    """A new tab on `url`, watched from before the first request; the document must answer 200."""
    page = await context.new_page()
    watched = watch(page)
    response = await page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    return watched


async def screenshot(page: Page, name: str) -> None:
    """Save the whole page as `name`.png in SCREENSHOTS (docs/screenshots with `make screenshots`)."""
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
