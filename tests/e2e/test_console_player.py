"""The call page made for calls (issue 13), in headless Chromium against the real daemon, PostgreSQL and a
call recorded through the sandbox Asterisk 22: the timeline's marks at the call log's evidence times, the
keys, a t= link, who listened, the audit trail by a piece of a call id, the phone layout at 390 px, axe-core
(vendored) in both languages, and the screenshots in docs/ (made here, so they stay current)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from caller import Finished, Tester
from playwright.async_api import Browser, Page, expect
from sandbox import SandboxInfo
from support import REPO
from support.console_browser import chromium, log_in, open_tab, play
from support.daemon_proc import call_row
from support.opsapi import PASSWORD as OPS_PASSWORD
from support.opsapi import T0, Bench, insert_call
from support.settings import make_settings
from test_calls_parties_e2e import answer_leg, bridged, call_in, talk_on
from test_calls_parties_e2e import finish as finish_parties

from callrec.app import Daemon
from callrec.config.settings import Settings
from callrec.store import users

PASSWORD = "console player password"
AXE = REPO / "tests" / "data" / "axe" / "axe.min.js"  # one vendored copy (4.14.1), shared with test_console_daily
DOCS = REPO / "docs"
# How far a mark may sit from the evidence time it draws (the bound).
MARK_SLACK_MS = 200


@pytest.fixture
def settings(asterisk: SandboxInfo, database: str) -> Settings:
    return make_settings(asterisk, database, http={"enabled": True, "listen": "127.0.0.1:0"})


@pytest.fixture
async def people(database: str) -> AsyncIterator[dict[str, str]]:
    conn = await asyncpg.connect(database)
    try:
        for name, role in (("qa-admin", "admin"), ("qa-super", "supervisor"), ("qa-auditor", "auditor")):
            await users.add_user(conn, name, role, PASSWORD)
    finally:
        await conn.close()
    yield {"admin": "qa-admin", "supervisor": "qa-super", "auditor": "qa-auditor"}


async def recorded_call(daemon: Daemon, tester: Tester, finished: Finished, database: str, *, args: str,
                        key: str, speak: int, early: str = "") -> asyncpg.Record:
    """A call through the sandbox; ``early``: a key pressed during the notice, seconds before ``key``."""
    call = await tester.place_call(args=args)
    await call.answered()
    await call.notice_started()
    if early:
        await call.press(early)
        await call.tester.log.wait_for(lambda e: e.get("type") == "ChannelDtmfReceived"
                                       and e["channel"]["id"] == call.callee_id, 10, "the early key", call.since)
    if args == "mode=opt-in":
        await call.playback_finished()
    await call.press(key)
    await call.handed_back()
    for _ in range(speak):
        await call.spoken(await call.speak())
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert daemon.writer is not None and await daemon.writer.flush()
    return await call_row(database, call.callee_id)


def ms_between(later: datetime, earlier: datetime) -> int:
    return round((later - earlier).total_seconds() * 1000)


async def marks(page: Page) -> tuple[float, list[dict[str, Any]]]:
    """The bar's span (ms) and each mark: its kind and the call time its drawn position stands for."""
    return await page.evaluate("""() => {
        const canvas = document.getElementById('wave');
        const box = canvas.getBoundingClientRect();
        const span = Number(canvas.dataset.spanMs);
        return [span, Array.from(document.querySelectorAll('#wave-markers .marker')).map((m) => {
            const r = m.getBoundingClientRect();
            return {kind: m.dataset.kind, ms: (r.left - box.left) / box.width * span};
        })];
    }""")


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    return await page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map((v) => ({id: v.id, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5)}));
    }""")


async def no_horizontal_scroll(page: Page, where: str) -> None:
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, (where, width)


async def test_the_call_page_player_timeline_keys_link_and_who_listened(
        daemon: Daemon, tester: Tester, finished: Finished, database: str, people: dict[str, str]) -> None:
    assert daemon.http is not None and daemon.http.port
    base = f"http://127.0.0.1:{daemon.http.port}"
    row = await recorded_call(daemon, tester, finished, database, args="mode=opt-in", key="1", speak=2, early="5")
    assert row["consent"] == "granted" and row["recording_status"] == "ready" and row["keys_pressed"] == "51"
    assert row["recording_duration"] > 9, row["recording_duration"]  # room for +5 s twice
    call_id = str(row["id"])
    start = row["started_at"]
    evidence = {"notice_start": ms_between(row["notice_started_at"], start),
                "notice_end": ms_between(row["notice_finished_at"], start),
                "consent": ms_between(row["consent_at"], start),
                "recording_start": ms_between(row["recording_started_at"], start),
                "hangup": ms_between(row["ended_at"], start)}
    # Each key at its own time: 5 during the notice, 1 seconds later in the window after it.
    key_ms = [ms_between(t, start) for t in row["keys_at"]]
    assert len(key_ms) == 2 and key_ms[1] - key_ms[0] > 1000, key_ms

    async with chromium() as browser:
        tab = await open_tab(browser, base)
        page = tab.page
        await log_in(page, people["supervisor"], PASSWORD)
        await page.goto(f"/#/call/{call_id}")
        await expect(page.locator("#badge-consent")).to_have_text("Consent given")
        await expect(page.locator("#badge-recording")).to_have_text(re.compile(r"^Recorded, 0:\d\d$"))
        await expect(page.locator("#wave-legend")).to_contain_text("both parties")  # mono in this sandbox
        await expect(page.locator("#timeline-body tr[data-kind=hangup]")).to_have_count(1)
        # Each mark sits at its evidence time (the drawn position, read back), within 0.2 s.
        span, drawn = await marks(page)
        assert span >= evidence["hangup"]
        found = {m["kind"]: m["ms"] for m in drawn}
        for kind, want in evidence.items():
            assert abs(found[kind] - want) <= MARK_SLACK_MS, (kind, found[kind], want)
        drawn_keys = [m["ms"] for m in drawn if m["kind"] == "key"]
        assert len(drawn_keys) == 2, drawn
        for got, want in zip(drawn_keys, key_ms, strict=True):
            assert abs(got - want) <= MARK_SLACK_MS, ("key", drawn_keys, key_ms)
        key_rows = page.locator("#timeline-body tr[data-kind=key]")
        await expect(key_rows.nth(0).locator("td").nth(2)).to_have_text("Key pressed: 5")
        await expect(key_rows.nth(1).locator("td").nth(2)).to_have_text("Key pressed: 1")
        # The table: millisecond times from the call's start, the recording's own clock beside them.
        rec_row = page.locator("#timeline-body tr[data-kind=recording_start] td")
        ms = evidence["recording_start"]
        await expect(rec_row.nth(0)).to_have_text(f"{ms // 60000}:{ms // 1000 % 60:02d}.{ms % 1000:03d}")
        await expect(rec_row.nth(1)).to_have_text("0:00.000")
        await expect(page.locator("#timeline-body tr[data-kind=consent] td").nth(2)).to_have_text(
            "Consent given (key 1)")
        # Before anything plays the player shows the real length, not 0:00 / 0:00, and nothing was listened to.
        length = int(row["recording_duration"])
        await expect(page.locator("#pl-time")).to_have_text(f"0:00 / 0:{length:02d}")
        await expect(page.locator("#readers-body tr[data-action=listen]")).to_have_count(0)
        await expect(page.locator("#readers-body tr[data-action=view]")).to_contain_text("viewed")
        # Space plays, Space pauses, → moves 5 s on, ← 5 s back (the speed control is there and works).
        await page.locator("#pl-speed").select_option("1.5")
        await play(page)
        assert await page.locator("#player").evaluate("a => a.playbackRate") == 1.5
        await expect(page.locator("#readers-body tr[data-action=listen]")).to_contain_text(people["supervisor"])
        await page.keyboard.press("Space")
        await page.wait_for_function("() => document.getElementById('player').paused")
        before = await page.locator("#player").evaluate("a => a.currentTime")
        await page.keyboard.press("ArrowRight")
        after = await page.locator("#player").evaluate("a => a.currentTime")
        assert abs(after - before - 5) < 0.05, (before, after)
        await page.keyboard.press("ArrowLeft")
        assert abs(await page.locator("#player").evaluate("a => a.currentTime") - before) < 0.05
        await page.get_by_role("button", name="+10 s (forward 10 seconds)").click()
        assert abs(await page.locator("#player").evaluate("a => a.currentTime") - before - 10) < 0.05 or \
            await page.locator("#player").evaluate("a => a.currentTime >= a.duration - 0.05")
        # A t= link starts at that second (nothing plays or is fetched until the user plays).
        tab2 = await open_tab(browser, base)
        page2 = tab2.page
        await log_in(page2, people["admin"], PASSWORD)
        await page2.goto(f"/#/call/{call_id}?t=3")
        await expect(page2.locator("#pl-time")).to_have_text(f"0:03 / 0:{length:02d}")
        await expect(page2.locator("#player")).to_have_js_property("paused", True)
        await play(page2)
        landed = await page2.locator("#player").evaluate("a => a.currentTime")
        assert 3 <= landed < 4.5, landed
        await tab.assert_clean()
        await tab2.assert_clean()

        # The audit trail by a piece of the call id, each entry naming the caller and agent in words.
        tab3 = await open_tab(browser, base)
        page3 = tab3.page
        await log_in(page3, people["auditor"], PASSWORD)
        await page3.goto("/#/audit")
        await page3.get_by_label("Call id", exact=True).fill(call_id[:8])
        await page3.get_by_role("button", name="Search", exact=True).click()
        listen = page3.locator("#audit-body tr[data-action=listen]")
        await expect(listen).to_have_count(2)  # the supervisor's and the admin's
        await expect(listen.first).to_contain_text("Test Caller <5551000>")
        await expect(listen.first.locator("td.details")).to_contain_text("bytes 0–")
        assert "{" not in await page3.locator("#audit-body").inner_text()
        # Not a piece of an id: said in the user's words, on this page, and nothing asked of the API.
        await page3.get_by_label("Call id", exact=True).fill("zz")
        await page3.get_by_role("button", name="Search", exact=True).click()
        await expect(page3.locator("#error")).to_have_text(
            "Call id: enter the whole id or at least 4 of its characters (digits 0-9, letters a-f).")
        await page3.locator("#lang").select_option("ru")
        await page3.get_by_role("button", name="Найти", exact=True).click()
        await expect(page3.locator("#error")).to_contain_text("Идентификатор звонка")
        # The error belongs to the audit page: the call page does not show it.
        await page3.goto(f"/#/call/{call_id}")
        await expect(page3.locator("#call-title")).to_contain_text("Test Caller")
        await expect(page3.locator("#error")).to_be_hidden()
        await tab3.assert_clean()


async def test_a_real_calls_pause_resume_and_transfer_are_drawn_at_their_evidence_times(
        daemon: Daemon, tester: Tester, finished: Finished, database: str, people: dict[str, str]) -> None:
    """A customer calls in to agent 201 through the sandbox Asterisk; a supervisor pauses and resumes the
    recording through the API while the call runs; 201 transfers the call (blind, #202) and 202 answers.  The
    call page draws the pause, the resume, 202 joining as the transfer and 201 leaving at the call log's times."""
    assert daemon.http is not None and daemon.http.port
    base = f"http://127.0.0.1:{daemon.http.port}"
    conn = await asyncpg.connect(database)
    try:
        _, secret = await users.create_token(conn, "pause-token", user=people["supervisor"])
    finally:
        await conn.close()
    auth = {"Authorization": f"Bearer {secret}"}
    call, phone, speech = await call_in(tester, "201")
    await talk_on(tester, speech)
    assert daemon.writer is not None and await daemon.writer.flush()
    conn = await asyncpg.connect(database)
    try:
        call_id = str(await conn.fetchval("SELECT id FROM calls WHERE uniqueid = $1", call.callee_id))
    finally:
        await conn.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/calls/{call_id}/pause", headers=auth) as r:
            assert r.status == 200, await r.text()
        await talk_on(tester, speech)  # the customer talks on, not recorded
        async with http.post(f"{base}/api/v1/calls/{call_id}/resume", headers=auth) as r:
            assert r.status == 200, await r.text()
    await talk_on(tester, speech)
    await tester.ari.send_dtmf(phone, "#202")  # agent 201: blind transfer to 202
    await tester.log.wait_for(lambda e: e.get("type") == "BridgeBlindTransfer", 20, "the blind transfer")
    await answer_leg(tester, "agent", "202")
    await bridged(tester, call.callee_id, times=2)
    await talk_on(tester, speech)  # the customer talks to 202
    await call.hang_up()
    r = await finish_parties(daemon, finished, database, call.callee_id)
    assert str(r["id"]) == call_id and r["recording_status"] == "ready"
    conn = await asyncpg.connect(database)
    try:
        [pause] = await conn.fetch("SELECT * FROM recording_pauses WHERE call_id = $1", r["id"])
        party_rows = await conn.fetch("SELECT * FROM call_parties WHERE call_id = $1 ORDER BY seq", r["id"])
    finally:
        await conn.close()
    start = r["started_at"]
    [target] = [p for p in party_rows if p["role"] == "transfer_target"]
    [transferer] = [p for p in party_rows if p["role"] == "transferer"]
    assert target["number"] == "202" and transferer["number"] == "201"
    evidence = {"pause": ms_between(pause["paused_at"], start), "resume": ms_between(pause["resumed_at"], start),
                "transfer": ms_between(target["joined_at"], start)}
    assert evidence["pause"] < evidence["resume"] < evidence["transfer"]
    left = ms_between(transferer["left_at"], start)

    async with chromium() as browser:
        tab = await open_tab(browser, base)
        page = tab.page
        await log_in(page, people["supervisor"], PASSWORD)
        await page.goto(f"/#/call/{call_id}")
        await expect(page.locator("#timeline-body tr[data-kind=hangup]")).to_have_count(1)
        span, drawn = await marks(page)
        assert span >= ms_between(r["ended_at"], start)
        for kind, want in evidence.items():
            [got] = [m["ms"] for m in drawn if m["kind"] == kind]
            assert abs(got - want) <= MARK_SLACK_MS, (kind, got, want)
        # 201 leaving at the transfer: its own mark when it left well before the hang-up.
        if ms_between(r["ended_at"], transferer["left_at"]) > 500:
            [got] = [m["ms"] for m in drawn if m["kind"] == "party_left"]
            assert abs(got - left) <= MARK_SLACK_MS, ("party_left", got, left)
        # The table lists them in words, at their millisecond times.
        for kind, words in (("pause", f"Recording paused by {people['supervisor']}(token:pause-token) "
                                      "(console or API)"),
                            ("resume", f"Recording resumed by {people['supervisor']}(token:pause-token) "
                                       "(console or API)"),
                            ("transfer", "Transferred to")):
            cells = page.locator(f"#timeline-body tr[data-kind={kind}] td")
            ms = evidence[kind]
            await expect(cells.nth(0)).to_have_text(f"{ms // 60000}:{ms // 1000 % 60:02d}.{ms % 1000:03d}")
            await expect(cells.nth(2)).to_contain_text(words)
        await expect(page.locator("#timeline-body tr[data-kind=transfer] td").nth(2)).to_contain_text("202")
        # The paused stretch is listed with the pauses too.
        await expect(page.locator("#pauses-box")).to_be_visible()
        await tab.assert_clean()


async def test_a_declined_call_shows_its_timeline_without_audio(
        daemon: Daemon, tester: Tester, finished: Finished, database: str, people: dict[str, str]) -> None:
    assert daemon.http is not None and daemon.http.port
    row = await recorded_call(daemon, tester, finished, database, args="mode=opt-out", key="9", speak=0)
    assert row["consent"] == "declined" and row["recording_status"] == "none"
    async with chromium() as browser:
        tab = await open_tab(browser, f"http://127.0.0.1:{daemon.http.port}")
        page = tab.page
        await log_in(page, people["supervisor"], PASSWORD)
        await page.goto(f"/#/call/{row['id']}")
        await expect(page.locator("#badge-consent")).to_have_text("Recording declined by the caller")
        await expect(page.locator("#badge-recording")).to_have_text("Not recorded")
        await expect(page.locator("#pl-controls")).to_be_hidden()
        await expect(page.locator("#timeline-body tr[data-kind=consent] td").nth(2)).to_have_text(
            "Recording declined (key 9)")
        _span, drawn = await marks(page)
        consent_ms = ms_between(row["consent_at"], row["started_at"])
        assert abs({m["kind"]: m["ms"] for m in drawn}["consent"] - consent_ms) <= MARK_SLACK_MS
        # Keys do nothing without audio, and nothing is fetched.
        await page.locator("#wave").focus()
        await page.keyboard.press("Space")
        await expect(page.locator("#player")).not_to_have_attribute("src", re.compile("."))
        await tab.assert_clean()


async def test_phone_layout_axe_and_screenshots(daemon: Daemon, tester: Tester, finished: Finished,
                                                database: str, people: dict[str, str]) -> None:
    assert daemon.http is not None and daemon.http.port
    base = f"http://127.0.0.1:{daemon.http.port}"
    row = await recorded_call(daemon, tester, finished, database, args="mode=opt-in", key="1", speak=1)
    call_id = str(row["id"])
    async with chromium() as browser:
        await phone_pages(browser, base, people, call_id)
        for lang in ("en", "ru"):
            await axe_pages(browser, base, people, call_id, lang)
        await screenshots(browser, base, people, call_id)


async def phone_pages(browser: Browser, base: str, people: dict[str, str], call_id: str) -> None:
    """No page scrolls sideways at 390 px, whoever is logged in."""
    for who in ("admin", "auditor"):
        context = await browser.new_context(base_url=base, viewport={"width": 390, "height": 844},
                                            timezone_id="UTC", is_mobile=True, has_touch=True)
        page = await context.new_page()
        await page.goto("/")
        await no_horizontal_scroll(page, "login")
        await log_in(page, people[who], PASSWORD)
        routes = ["#/search", f"#/call/{call_id}", "#/alerts", "#/audit"] if who == "admin" else \
            ["#/audit", f"#/call/{call_id}"]
        for route in routes:
            await page.goto("/" + route)
            await expect(page.locator("body")).to_have_attribute("data-view", re.compile("^view-"))
            await page.wait_for_load_state("networkidle")
            await no_horizontal_scroll(page, (who, route))
        # Table rows are cards there: each cell carries its column's name.
        await page.goto(f"/#/call/{call_id}")
        await expect(page.locator("#timeline-body tr").first.locator("td").first).to_have_attribute(
            "data-label", "In the call")
        await context.close()


async def axe_pages(browser: Browser, base: str, people: dict[str, str], call_id: str, lang: str) -> None:
    # axe is added as a script: only this context lets it past the page's strict policy.
    context = await browser.new_context(base_url=base, bypass_csp=True, timezone_id="UTC",
                                        locale="ru-RU" if lang == "ru" else "en-US")
    page = await context.new_page()
    labels = ("Имя пользователя", "Пароль", "Войти") if lang == "ru" else ("User name", "Password", "Log in")
    await log_in(page, people["admin"], PASSWORD, labels=labels)
    await page.goto(f"/#/call/{call_id}")
    await expect(page.locator("#timeline-body tr[data-kind=hangup]")).to_have_count(1)
    await expect(page.locator("#readers-body tr").first).to_be_visible()
    assert await axe_violations(page) == [], ("call", lang)
    await page.goto("/#/audit")
    await expect(page.locator("#audit-body tr").first).to_be_visible()
    assert await axe_violations(page) == [], ("audit", lang)
    await context.close()


async def screenshots(browser: Browser, base: str, people: dict[str, str], call_id: str) -> None:
    for name, viewport in (("desktop", {"width": 1440, "height": 900}), ("phone", {"width": 390, "height": 844})):
        context = await browser.new_context(base_url=base, viewport=viewport, timezone_id="UTC")
        page = await context.new_page()
        await log_in(page, people["admin"], PASSWORD)
        await page.goto(f"/#/call/{call_id}")
        await expect(page.locator("#timeline-body tr[data-kind=hangup]")).to_have_count(1)
        await page.wait_for_load_state("networkidle")
        path = DOCS / f"console-call-{name}.png"
        await page.screenshot(path=str(path), full_page=name == "phone")
        assert path.stat().st_size > 10_000
        await context.close()


async def test_an_outbound_call_is_titled_by_the_called_party_and_tags_are_suggested(bench: Bench) -> None:
    async with bench.pool.acquire() as conn:
        call_id = await insert_call(conn, bench.rec_dir, started=T0, agent="201", caller="201", caller_name="Agent",
                                    called="+4930999", direction="outbound")
        await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, 'billing', 'test')",
                           uuid.UUID(bench.calls["other"]))
    async with chromium() as browser:
        tab = await open_tab(browser, bench.base)
        page = tab.page
        await log_in(page, "admin1", OPS_PASSWORD)
        await page.goto(f"/#/call/{call_id}")
        await expect(page.locator("#call-title")).to_have_text("Call to +4930999")
        # Tag suggestions: the tags in use on the calls this user sees.
        await expect(page.locator("#tag-suggestions option[value=billing]")).to_have_count(1)
        await page.locator("#lang").select_option("ru")
        await expect(page.locator("#call-title")).to_have_text("Звонок на +4930999")
        await tab.assert_clean()
