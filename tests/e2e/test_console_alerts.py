"""The alerts page of the web console (contract 4), in a real headless Chromium against the real ops API
and PostgreSQL: alerts raised by the real AlertMatcher on a committed clip's real transcript, each linking
to the call at the moment, and a supervisor never sees the alerts of a confidential call (the API filters;
the page shows none).
"""

from __future__ import annotations

import re

import aiohttp
from playwright.async_api import Browser, expect
from support.console_browser import log_in, open_tab
from support.console_speech import (
    SEEK_SLACK_S,
    bench,
    browser,
    clip_call,
    clip_transcript,
    engine,
    first_seek,
    stored_word,
    watch_seeks,
)
from support.opsapi import PASSWORD, Bench

from callrec.analytics.alerts import AlertMatcher
from callrec.speech.transcript import Transcript

__all__ = ["bench", "browser", "clip_transcript", "engine"]  # fixtures used by name


async def test_alerts_page_links_to_the_moment_and_hides_confidential_calls(bench: Bench, browser: Browser,
                                                                          clip_transcript: Transcript) -> None:
    plain = await clip_call(bench, clip_transcript, minutes=10)
    secret = await clip_call(bench, clip_transcript, minutes=11, confidential=True)
    async with aiohttp.ClientSession() as http:
        async with http.post(bench.base + "/api/v1/alert-rules", headers=bench.auth("admin"),
                             json={"name": "invoice-talk", "phrases": ["invoice"]}) as resp:
            assert resp.status == 201, await resp.text()
    matcher = AlertMatcher(bench.settings)
    async with bench.pool.acquire() as conn:
        for call_id in (plain, secret):
            await matcher(conn, call_id)
        assert await conn.fetchval("SELECT count(*) FROM alerts") == 2
    word = await stored_word(bench, plain, "invoice")

    supervisor = await open_tab(browser, bench.base)
    page = supervisor.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.get_by_role("link", name="Alerts", exact=True).click()
    rows = page.locator("#alerts-body tr")
    await expect(rows).to_have_count(1)  # the confidential call's alert is not shown to a supervisor
    await expect(rows.first).to_have_attribute("data-call-id", plain)
    await expect(rows.first).to_contain_text("invoice-talk")
    await expect(rows.first).to_contain_text("said")
    assert secret not in await page.content()
    await watch_seeks(page)
    await rows.first.locator("a.alert-call").click()
    await expect(page).to_have_url(re.compile(rf"#/call/{plain}/at/\d+$"))
    landed = await first_seek(page)
    assert abs(landed - word["start_ms"] / 1000) < SEEK_SLACK_S, (landed, word)
    await supervisor.assert_clean()

    # Security sees both, the confidential one included.
    security = await open_tab(browser, bench.base)
    await log_in(security.page, "security1", PASSWORD)
    await security.page.goto("/#/alerts")
    await expect(security.page.locator("#alerts-body tr")).to_have_count(2)
    await security.assert_clean()
