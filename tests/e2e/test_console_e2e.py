"""A call recorded through the real sandbox Asterisk 22, found, opened and played in the console
(served by the daemon itself, as `callrec serve` does), in headless Chromium."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
from caller import Finished, Tester
from playwright.async_api import expect
from sandbox import SandboxInfo
from support.console_browser import chromium, log_in, open_tab, play
from support.settings import make_settings

from callrec.app import Daemon
from callrec.config.settings import Settings
from callrec.store import users

PASSWORD = "console e2e password"


@pytest.fixture
def settings(asterisk: SandboxInfo, database: str) -> Settings:
    # The daemon's own HTTP server (off in the other tests), on a free port.
    return make_settings(asterisk, database, http={"enabled": True, "listen": "127.0.0.1:0"})


@pytest.fixture
async def admin(database: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(database)
    try:
        await users.add_user(conn, "qa-admin", "admin", PASSWORD)
    finally:
        await conn.close()
    yield "qa-admin"


async def test_a_call_recorded_through_asterisk_plays_in_the_console(
        daemon: Daemon, tester: Tester, finished: Finished, database: str, admin: str) -> None:
    assert daemon.http is not None and daemon.http.port
    base = f"http://127.0.0.1:{daemon.http.port}"
    # A real call: opt-in, the caller presses 1 after the notice, speaks, hangs up.
    call = await tester.place_call(args="mode=opt-in")
    await call.answered()
    await call.speak()
    await call.playback_finished()
    await call.press("1")
    back = await call.handed_back()
    assert back["consent"] == "granted" and back["recording"]
    await call.spoken(await call.speak())
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", call.callee_id)
    finally:
        await conn.close()
    assert row is not None and row["recording_status"] == "ready"
    call_id = str(row["id"])

    async with chromium() as browser:
        tab = await open_tab(browser, base)
        page = tab.page
        await log_in(page, admin, PASSWORD)
        await page.get_by_label("Number", exact=True).fill("555*")
        await page.get_by_role("button", name="More filters", exact=True).click()
        await page.get_by_label("Consent", exact=True).select_option("granted")
        await page.get_by_role("button", name="Search", exact=True).click()
        rows = page.locator("#results-body tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-call-id", call_id)
        await expect(rows.first).to_contain_text("Test Caller <5551000>")
        await expect(rows.first).to_contain_text("ready")
        await rows.first.get_by_role("link").click()
        await expect(page).to_have_url(re.compile(f"#/call/{call_id}$"))
        # What the caller was told and what they answered, as the call log holds it.
        await expect(page.locator("#ev-consent")).to_have_text("granted")
        await expect(page.locator("#ev-key")).to_have_text("1")
        await expect(page.locator("#ev-completed")).to_have_text("yes")
        await expect(page.locator("#ev-prompt")).to_have_text(row["notice_prompt"])
        assert row["notice_prompt"].endswith("/en/notice-opt-in.wav")
        await expect(page.locator("#evidence")).to_contain_text(row["notice_prompt_sha256"])
        await expect(page.locator("#recording")).to_contain_text(row["recording_sha256"])
        await play(page)
        await expect(page.locator("#player-state")).to_have_text("Playing")
        listen = page.locator("#call-audit-body tr[data-action=listen]")
        await expect(listen.first).to_contain_text(admin)
        duration = await page.locator("#player").evaluate("a => a.duration")
        assert abs(duration - row["recording_duration"]) < 0.2
        await tab.assert_clean()


async def test_the_dashboard_counts_a_call_recorded_through_asterisk_and_opens_it(
        daemon: Daemon, tester: Tester, finished: Finished, database: str) -> None:
    """The dashboard served by the daemon: a real declined call and a real recorded one, counted as SQL counts
    them, each figure opening its call; the list's search survives a reload."""
    assert daemon.http is not None and daemon.http.port
    base = f"http://127.0.0.1:{daemon.http.port}"
    conn = await asyncpg.connect(database)
    try:
        await users.add_user(conn, "qa-supervisor", "supervisor", PASSWORD)
    finally:
        await conn.close()
    recorded = await tester.place_call(args="mode=opt-in")
    await recorded.answered()
    await recorded.playback_finished()
    await recorded.press("1")
    assert (await recorded.handed_back())["recording"]
    await recorded.spoken(await recorded.speak())
    await recorded.hang_up()
    await finished.wait(recorded.callee_id)
    declined = await tester.place_call(args="mode=opt-out")  # the opt-out key during the notice
    await declined.answered()
    await declined.notice_started()
    await declined.press("9")
    assert (await declined.handed_back())["consent"] == "declined"
    await declined.hang_up()
    await finished.wait(declined.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    conn = await asyncpg.connect(database)
    try:
        rows = {r["uniqueid"]: r for r in await conn.fetch(
            "SELECT id, uniqueid, consent, recording_status FROM calls")}
    finally:
        await conn.close()
    rec_id, dec_id = str(rows[recorded.callee_id]["id"]), str(rows[declined.callee_id]["id"])
    assert rows[recorded.callee_id]["recording_status"] == "ready" and rows[declined.callee_id]["consent"] == "declined"

    async with chromium() as browser:
        tab = await open_tab(browser, base)
        page = tab.page
        await log_in(page, "qa-supervisor", PASSWORD)
        await expect(page).to_have_url(re.compile("#/dashboard$"))
        await expect(page.locator("#dash-total")).to_have_text(str(len(rows)))
        await expect(page.locator("#dash-declined")).to_have_text("1")
        await expect(page.locator("#dash-recorded")).to_contain_text("1 (50 %)")
        await page.locator("#dash-declined a").click()
        await expect(page.locator("#results-body tr[data-call-id]")).to_have_count(1)
        await expect(page.locator("#results-body tr[data-call-id]")).to_have_attribute("data-call-id", dec_id)
        await page.reload()
        await expect(page.locator("#results-body tr[data-call-id]")).to_have_attribute("data-call-id", dec_id)
        await page.go_back()
        await expect(page.locator("#view-dashboard")).to_be_visible()
        await page.locator("#dash-recorded a").click()
        await expect(page.locator("#results-body tr[data-call-id]")).to_have_attribute("data-call-id", rec_id)
        await page.locator("#results-body tr[data-call-id] td").nth(2).click()
        await expect(page).to_have_url(re.compile(f"#/call/{rec_id}$"))
        await expect(page.locator("#rf-status")).to_have_text("ready")
        await tab.assert_clean()
