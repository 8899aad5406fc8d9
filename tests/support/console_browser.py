"""Headless Chromium for the console tests: Debian's `chromium` driven by Playwright.

The browser is never downloaded (`playwright install` is not used): Playwright launches the
system binary given by $CALLREC_CHROMIUM or found as `chromium` on PATH.  No browser, or one
that does not start, fails the test with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

# Playwright's own waits (expect, wait_for_*) give up after this; they poll, they do not sleep.
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)

# Installed by the tests into every page: CSP violations and script errors are test failures.
_WATCH = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def chromium_path() -> str:
    path = os.environ.get("CALLREC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("no Chromium for the console tests: install Debian's `chromium` (apt-get install -y chromium) "
                    "or set CALLREC_CHROMIUM", pytrace=False)
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as pw:
        try:
            browser = await pw.chromium.launch(executable_path=path, headless=True, timeout=TIMEOUT_MS)
        except Exception as exc:
            pytest.fail(f"Chromium ({path}) did not start: {exc}", pytrace=False)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Tab:
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    async def violations(self) -> list[str]:
        return await self.page.evaluate("window.__cspViolations || []")

    async def assert_clean(self) -> None:
        """No script errors and no Content-Security-Policy violations so far."""
        assert await self.violations() == []
        assert self.errors == []


async def open_tab(browser: Browser, base: str, *, locale: str = "en-US") -> Tab:
    """A fresh browser profile (own cookies) with the given locale (it sets Accept-Language)."""
    # UTC: times on the page do not depend on the machine's time zone.
    context = await browser.new_context(base_url=base, locale=locale, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    await context.add_init_script(_WATCH)
    page = await context.new_page()
    tab = Tab(context, page)

    def on_console(msg: ConsoleMessage) -> None:
        # 401 from /api/v1/me before log-in and 404s the tests provoke are expected network
        # errors; anything else logged as an error is a bug.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            tab.errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
    return tab


async def log_in(page: Page, user: str, password: str, *, labels: tuple[str, str, str] = (
        "User name", "Password", "Log in")) -> None:
    """Log in through the form, finding the fields by their visible labels as a person would."""
    user_label, password_label, button = labels
    await page.goto("/")
    await expect(page.locator("#login-form")).to_be_visible()
    await page.get_by_label(user_label, exact=True).fill(user)
    await page.get_by_label(password_label, exact=True).fill(password)
    await page.get_by_role("button", name=button, exact=True).click()
    await expect(page.locator("#whoami")).to_be_visible()
    await expect(page.locator("#who-user")).to_have_text(user)


async def play(page: Page) -> None:
    """Press play as a person would (Space on the call page's waveform: the console's own key), and wait
    for the media `playing` event."""
    player = page.locator("#player")
    await player.evaluate("a => { window.__playing = new Promise((resolve, reject) => {"
                          " a.addEventListener('playing', () => resolve(a.currentSrc), {once: true});"
                          " a.addEventListener('error', () => reject(new Error('media error ' + a.error.code)),"
                          " {once: true}); }); }")
    await expect(page.locator("#pl-controls")).to_be_visible()
    wave = page.locator("#wave")
    await wave.scroll_into_view_if_needed()
    await wave.focus()
    await page.keyboard.press("Space")
    src = await asyncio.wait_for(page.evaluate("() => window.__playing"), TIMEOUT_MS / 1000)
    assert src.endswith("/audio")
