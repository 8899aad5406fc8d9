"""The web console in a real headless Chromium (Debian's), against the real ops API and PostgreSQL.

Calls are rows written into the database with real WAV files (tests/opsapi.py); the call recorded
through the sandbox Asterisk is in test_console_e2e.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, Page, expect
from support import REPO
from support.console_browser import chromium, log_in, open_tab, play
from support.opsapi import PASSWORD, Bench, running_bench

from callrec.web.console import CSP, STATIC_FILES

STATIC = REPO / "callrec" / "web" / "console" / "static"


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    async with running_bench(database, tmp_path) as b:
        yield b


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def audit_actions(bench: Bench, call_id: str, actor: str) -> list[str]:
    rows = await bench.pool.fetch("SELECT action FROM audit_log WHERE call_id = $1 AND actor = $2 ORDER BY id",
                                  uuid.UUID(call_id), actor)
    return [r["action"] for r in rows]


async def search_for(page: Page, number: str) -> None:
    await page.get_by_label("Number", exact=True).fill(number)
    await page.get_by_role("button", name="Search", exact=True).click()


# --- the whole path a supervisor or admin takes ------------------------------------------------------

async def test_log_in_search_open_play_and_see_the_listen_in_the_audit(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    # The search page lists every call admin may see, newest first.
    await expect(page.locator("#results-body tr")).to_have_count(len(bench.calls))
    await search_for(page, "+4930111")
    rows = page.locator("#results-body tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-call-id", bench.calls["mine"])
    await rows.first.get_by_role("link").click()
    await expect(page).to_have_url(re.compile(r"#/call/" + bench.calls["mine"] + "$"))
    await expect(page.locator("#call-title")).to_have_text("Call from Alice <+4930111>")
    await expect(page).to_have_title("Call from Alice <+4930111> — callrec")
    # Consent evidence and recording facts, from the row.
    await expect(page.locator("#ev-consent")).to_have_text("implied")
    await expect(page.locator("#ev-prompt")).to_have_text("callrec/en/notice")
    await expect(page.locator("#ev-completed")).to_have_text("yes")
    await expect(page.locator("#rf-status")).to_have_text("ready")
    # Opening the call was audited as a view, and nothing was listened to yet (preload="none").
    audit = page.locator("#call-audit-body tr")
    await expect(audit.and_(page.locator("[data-action=view]"))).to_have_count(1)
    # The waveform is read from the recording: audited as such (not as a listen).
    await expect(page.locator("#wave-legend")).to_contain_text("both parties")
    assert sorted(await audit_actions(bench, bench.calls["mine"], "admin1")) == ["view", "waveform"]
    await play(page)
    await expect(page.locator("#player-state")).to_have_text("Playing")
    # The listen the player's first request made is in the call's audit entries on the page.
    await expect(audit.and_(page.locator("[data-action=listen]")).first).to_contain_text("listened")
    await expect(audit.and_(page.locator("[data-action=listen]")).first).to_contain_text("admin1")
    assert "listen" in await audit_actions(bench, bench.calls["mine"], "admin1")
    await tab.assert_clean()


async def test_the_player_seeks_with_range_requests(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.goto(f"/#/call/{bench.calls['other']}")
    await expect(page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    ranges: list[str] = []
    page.on("request", lambda r: ranges.append(r.headers.get("range", "")) if r.url.endswith("/audio") else None)
    await play(page)
    seeked = await page.locator("#player").evaluate("""a => new Promise((resolve, reject) => {
        a.addEventListener('seeked', () => resolve(a.currentTime), {once: true});
        a.addEventListener('error', () => reject(new Error('media error ' + a.error.code)), {once: true});
        a.currentTime = a.duration * 0.8;
    })""")
    assert seeked > 0.5
    assert any(r.startswith("bytes=") for r in ranges), ranges
    # The supervisor does not see audit entries (their role may not search the audit trail).
    await expect(page.locator("#call-audit-box")).to_be_hidden()
    await tab.assert_clean()


async def test_keyset_paging_through_results(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    # Two per page over the six seeded calls (the select offers 25 and up; the API takes any 1-500).
    await page.locator("#f-limit").evaluate("s => { s.add(new Option('2', '2')); s.value = '2'; }")
    await page.get_by_role("button", name="Search", exact=True).click()
    seen: list[str] = []
    for page_no in (1, 2, 3):
        await expect(page.locator("#page-no")).to_have_text(f"Page {page_no}")
        rows = page.locator("#results-body tr")
        await expect(rows).to_have_count(2)
        seen += [await r.get_attribute("data-call-id") for r in await rows.all()]
        if page_no < 3:
            await page.get_by_role("button", name="Next", exact=True).click()
    await expect(page.get_by_role("button", name="Next", exact=True)).to_be_disabled()
    assert len(set(seen)) == 6 and set(seen) == set(bench.calls.values())
    await page.get_by_role("button", name="Previous", exact=True).click()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    await expect(page.locator("#results-body tr").first).to_have_attribute("data-call-id", seen[2])
    await tab.assert_clean()


# --- who may see what -------------------------------------------------------------------------------

async def test_a_supervisor_cannot_see_a_confidential_call(bench: Bench, browser: Browser) -> None:
    secret = bench.calls["confidential"]
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.get_by_role("link", name="Calls", exact=True).click()  # supervisors land on the dashboard
    rows = page.locator("#results-body tr")
    await expect(rows).to_have_count(len(bench.calls) - 1)
    await expect(page.locator(f'#results-body tr[data-call-id="{secret}"]')).to_have_count(0)
    await expect(page.locator("#results-body")).not_to_contain_text("Secret")
    await search_for(page, "+4930444")
    await expect(page.locator("#results-empty")).to_be_visible()
    # A direct link shows "not found", exactly like a call that does not exist.
    await page.goto(f"/#/call/{secret}")
    await expect(page.locator("#call-missing")).to_be_visible()
    await expect(page.locator("#call-missing")).to_have_text("No such call, or you may not see it.")
    await expect(page.locator("#call-body")).to_be_hidden()
    await expect(page.locator("#player")).not_to_have_attribute("src", re.compile("."))
    # Nothing was shown, but the attempt is on the trail (issue 10 item 4: a hidden call's 404).
    assert await audit_actions(bench, secret, "supervisor1") == ["access_denied"]
    # The cleared role sees it, marked confidential.
    tab2 = await open_tab(browser, bench.base)
    await log_in(tab2.page, "security1", PASSWORD)
    await tab2.page.goto(f"/#/call/{secret}")
    await expect(tab2.page.locator("#flag-confidential")).to_have_text("Confidential")
    await tab2.page.get_by_role("link", name="Calls", exact=True).click()
    await expect(tab2.page.locator(f'#results-body tr[data-call-id="{secret}"]')).to_contain_text("Confidential")
    await expect(tab2.page.locator("#results-body")).to_contain_text("Confidential")
    assert await tab2.page.locator("#results-body .flag").count() == 1
    await expect(tab2.page.locator("#call-title")).to_have_text("Call from Secret <+4930444>")
    await tab.assert_clean()
    await tab2.assert_clean()


async def test_an_agent_sees_only_own_calls(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "agent1", PASSWORD)
    rows = page.locator("#results-body tr")
    expected = {bench.calls["mine"], bench.calls["party"], bench.calls["deleted"]}
    await expect(rows).to_have_count(len(expected))
    assert {await r.get_attribute("data-call-id") for r in await rows.all()} == expected
    # A deleted recording: the row stays and says so; there is no player.
    await page.goto(f"/#/call/{bench.calls['deleted']}")
    await expect(page.locator("#rf-status")).to_have_text("audio deleted")
    await expect(page.locator("#no-audio")).to_contain_text("deleted")
    await expect(page.locator("#pl-controls")).to_be_hidden()
    await expect(page.locator("#badge-recording")).to_have_text("Recording deleted")
    await page.goto(f"/#/call/{bench.calls['other']}")
    await expect(page.locator("#call-missing")).to_be_visible()
    await tab.assert_clean()


async def test_the_auditor_gets_the_audit_trail_and_no_audio(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    await log_in(tab.page, "admin1", PASSWORD)
    await tab.page.goto(f"/#/call/{bench.calls['other']}")
    await expect(tab.page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    await tab.context.close()
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "auditor1", PASSWORD)
    await expect(page).to_have_url(re.compile("#/audit$"))
    await expect(page.locator("#nav-search")).to_be_hidden()
    await page.get_by_label("Who", exact=True).fill("admin1")
    await page.get_by_label("Action", exact=True).fill("view")
    await page.get_by_role("button", name="Search", exact=True).click()
    rows = page.locator("#audit-body tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(bench.calls["other"])
    await rows.first.get_by_role("link").click()
    await expect(page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    await expect(page.locator("#pl-controls")).to_be_hidden()
    await expect(page.locator("#no-audio")).to_have_text("No audio to play: your role may not listen to recordings.")
    await tab.assert_clean()


async def test_wrong_password_is_refused_and_logout_ends_the_session(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await page.goto("/")
    await page.get_by_label("User name", exact=True).fill("admin1")
    await page.get_by_label("Password", exact=True).fill("not the password")
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    await expect(page.locator("#view-search")).to_be_hidden()
    await log_in(page, "admin1", PASSWORD)
    await page.get_by_role("button", name="Log out", exact=True).click()
    await expect(page.locator("#login-form")).to_be_visible()
    # The cookie no longer opens anything: a reload lands on the log-in form.
    await page.reload()
    await expect(page.locator("#login-form")).to_be_visible()
    actions = [r["action"] for r in await bench.pool.fetch(
        "SELECT action FROM audit_log WHERE actor = 'admin1' ORDER BY id")]
    # The console's call list is a search: its pages are audited per window (test_search_audit.py).
    assert "search" in actions
    assert [a for a in actions if a != "search"][:3] == ["login_failed", "login", "logout"]
    tab.errors.clear()  # the refused log-in's 401 is logged by the browser as a failed resource
    await tab.assert_clean()


async def test_after_a_reload_tags_still_carry_a_csrf_token(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.goto(f"/#/call/{bench.calls['other']}")
    await page.reload()  # the in-memory CSRF token is gone; the page asks for a new one
    await expect(page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    await page.get_by_label("New tag", exact=True).fill("quality check")
    await page.get_by_role("button", name="Add tag", exact=True).click()
    await expect(page.locator("#tags")).to_contain_text("quality check")
    assert await bench.pool.fetchval("SELECT count(*) FROM call_tags WHERE tag = 'quality check'") == 1
    await page.get_by_role("button", name="Remove tag quality check", exact=True).click()
    await expect(page.locator("#tags")).to_have_text("No tags.")
    assert await bench.pool.fetchval("SELECT count(*) FROM call_tags") == 0
    await tab.assert_clean()


# --- languages -----------------------------------------------------------------------------------------

async def test_russian_browser_gets_the_russian_console(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base, locale="ru-RU")
    page = tab.page
    await page.goto("/")
    await expect(page.locator("html")).to_have_attribute("lang", "ru")
    await expect(page.locator("#login-title")).to_have_text("Вход")
    await log_in(page, "admin1", PASSWORD, labels=("Имя пользователя", "Пароль", "Войти"))
    await expect(page.locator("#search-title")).to_have_text("Звонки")
    await page.get_by_role("button", name="Ещё фильтры", exact=True).click()
    for label in ("Номер", "Направление", "Согласие", "Записан", "Метки", "Оператор (внутренний номер)"):
        await expect(page.locator("#search-form").get_by_label(label, exact=True)).to_be_visible()
    await expect(page.locator("#results thead")).to_contain_text("Звонящий")
    await page.get_by_label("Номер", exact=True).fill("+4930111")
    await page.get_by_role("button", name="Найти", exact=True).click()
    await expect(page.locator("#results-body tr")).to_have_count(1)
    await expect(page.locator("#results-body tr").first).to_contain_text("подразумеваемое")
    await page.locator("#results-body a").first.click()
    await expect(page.locator("#call-title")).to_have_text("Звонок от Alice <+4930111>")
    await expect(page.get_by_role("heading", name="Подтверждение согласия")).to_be_visible()
    await expect(page.locator("#ev-completed")).to_have_text("да")
    await expect(page.get_by_role("heading", name="Записи аудита по звонку")).to_be_visible()
    # The switch: English now, and it sticks across a reload (cookie, not the Accept-Language).
    await page.get_by_label("Язык", exact=True).select_option("en")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("#call-title")).to_have_text("Call from Alice <+4930111>")
    await expect(page.get_by_role("heading", name="Consent evidence")).to_be_visible()
    await page.reload()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.get_by_label("Language", exact=True)).to_have_value("en")
    await tab.assert_clean()


# --- what the server sends ------------------------------------------------------------------------------

async def test_page_and_files_carry_a_strict_policy_and_no_inline_code(bench: Bench) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(bench.base + "/", headers={"Accept-Language": "ru"}) as resp:
            assert resp.status == 200
            html = await resp.text()
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["Content-Language"] == "ru" and resp.headers["Cache-Control"] == "no-store"
        assert '<html lang="ru"' in html
        assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP and "script-src 'self'" in CSP
        # Every script is a file; no inline handlers or styles (the policy would block them anyway).
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
        assert not re.search(r"\son[a-z]+=", html) and " style=" not in html and "<style" not in html
        for name in STATIC_FILES:
            async with http.get(f"{bench.base}/console/{name}") as resp:
                assert resp.status == 200, name
                assert resp.headers["Content-Security-Policy"] == CSP
                etag = resp.headers["ETag"]
            async with http.get(f"{bench.base}/console/{name}", headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304
        for bad in ("/console/index.html.bak", "/console/..%2Fconsole%2F__init__.py", "/console/%2e%2e/app.py",
                    "/console/", "/console/session/x"):
            async with http.get(bench.base + bad) as resp:
                assert resp.status == 404, bad
                assert (await resp.json())["error"]


async def test_the_session_route_gives_a_new_csrf_token_to_cookie_sessions_only(bench: Bench) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(bench.base + "/console/session") as resp:
            assert resp.status == 401
        async with http.get(bench.base + "/console/session", headers=bench.auth("admin")) as resp:
            assert resp.status == 401  # tokens have no CSRF token; only a cookie session counts
        async with http.post(bench.base + "/api/v1/login", json={"username": "admin1", "password": PASSWORD}) as resp:
            assert resp.status == 200
            first = (await resp.json())["csrf_token"]
        async with http.get(bench.base + "/console/session") as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            fresh = (await resp.json())["csrf_token"]
        assert fresh != first
        tag_url = f"{bench.base}/api/v1/calls/{bench.calls['other']}/tags"
        async with http.post(tag_url, json={"tag": "x"}, headers={"X-CSRF-Token": first}) as resp:
            assert resp.status == 403  # the old token was replaced
        async with http.post(tag_url, json={"tag": "x"}) as resp:
            assert resp.status == 403  # none at all
        async with http.post(tag_url, json={"tag": "x"}, headers={"X-CSRF-Token": fresh}) as resp:
            assert resp.status in (200, 201)
        async with http.post(bench.base + "/api/v1/logout", headers={"X-CSRF-Token": fresh}) as resp:
            assert resp.status == 200
        async with http.get(bench.base + "/console/session") as resp:
            assert resp.status == 401


async def test_no_secret_reaches_urls_or_storage(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    await log_in(page, "admin1", PASSWORD)
    await page.goto(f"/#/call/{bench.calls['mine']}")
    await play(page)
    await page.reload()
    await expect(page.locator("#call-title")).to_have_text("Call from Alice <+4930111>")
    storage = await page.evaluate("[JSON.stringify(localStorage), JSON.stringify(sessionStorage), document.cookie]")
    session_cookie = next(c for c in await tab.context.cookies() if c["name"] == "callrec_session")
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Strict"
    secrets = [session_cookie["value"], PASSWORD]
    for where in [*urls, *storage, page.url]:
        for secret in secrets:
            assert secret not in where
    assert storage[0] == "{}" and storage[1] == "{}"
    assert "callrec_session" not in storage[2]  # HttpOnly: invisible to scripts
    await tab.assert_clean()


async def test_an_expired_session_returns_to_the_login(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    await expect(page.locator("#results-body tr")).to_have_count(len(bench.calls))
    conn: asyncpg.Pool = bench.pool
    await conn.execute("DELETE FROM web_sessions")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text("Your session has ended. Please log in again.")
    await expect(page.locator("#login-form")).to_be_visible()
    tab.errors.clear()  # the browser logs the 401 as a failed resource
    await tab.assert_clean()


async def test_export_links_download_the_filtered_calls(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.get_by_role("link", name="Calls", exact=True).click()  # supervisors land on the dashboard
    await search_for(page, "+4930222")
    await expect(page.locator("#results-body tr")).to_have_count(1)
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export CSV", exact=True).click()
    download = await info.value
    body = Path(await download.path()).read_text("utf-8")
    assert bench.calls["other"] in body and bench.calls["mine"] not in body
    assert "number=%2B4930222" in download.url
    assert await bench.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'export' "
                                     "AND actor = 'supervisor1'") == 1
    await tab.assert_clean()


async def test_security_places_and_releases_a_legal_hold(bench: Bench, browser: Browser) -> None:
    target = bench.calls["other"]
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "security1", PASSWORD)
    await page.goto(f"/#/call/{target}")
    await expect(page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    # The reason is asked in the page's own dialog (no window.prompt); cancelled: nothing is held.
    await page.get_by_role("button", name="Place a legal hold", exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Cancel", exact=True).click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("button", name="Delete the recording", exact=True)).to_be_visible()
    assert not await bench.pool.fetchval("SELECT legal_hold FROM calls WHERE id = $1", uuid.UUID(target))
    await page.get_by_role("button", name="Place a legal hold", exact=True).click()
    await dialog.get_by_label("Case or request reference", exact=True).fill("case 2026/117")
    await dialog.get_by_role("button", name="Place a legal hold", exact=True).click()
    # The badge says who placed the hold, when and why.
    await expect(page.locator("#flag-hold")).to_have_text(re.compile(
        r"^Legal hold: placed by security1\S*, .+2026.+, because: case 2026/117$"))
    # Held: the recording cannot be deleted, so the console offers no delete.
    await expect(page.get_by_role("button", name="Delete the recording", exact=True)).to_be_hidden()
    held = await bench.pool.fetchrow("SELECT legal_hold, legal_hold_by, legal_hold_reason FROM calls WHERE id = $1",
                                     uuid.UUID(target))
    assert (held["legal_hold"], held["legal_hold_reason"]) == (True, "case 2026/117")
    assert held["legal_hold_by"].startswith("security1")
    await page.get_by_role("button", name="Release the legal hold", exact=True).click()
    await expect(page.locator("#flag-hold")).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete the recording", exact=True)).to_be_visible()
    assert not await bench.pool.fetchval("SELECT legal_hold FROM calls WHERE id = $1", uuid.UUID(target))
    assert [a for a in await audit_actions(bench, target, "security1") if a.startswith("legal_hold")] == [
        "legal_hold", "legal_hold_release"]
    await tab.assert_clean()


async def test_security_marks_a_call_confidential_and_deletes_its_recording(bench: Bench, browser: Browser) -> None:
    target = bench.calls["other"]
    wav = bench.rec_dir / await bench.pool.fetchval("SELECT recording_path FROM calls WHERE id = $1",
                                                    uuid.UUID(target))
    assert wav.is_file()
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "security1", PASSWORD)
    await page.goto(f"/#/call/{target}")
    await expect(page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    await page.get_by_role("button", name="Mark confidential", exact=True).click()
    await expect(page.locator("#flag-confidential")).to_have_text(re.compile(r"^Confidential: marked by security1, "))
    await expect(page.get_by_role("button", name="Remove the confidential mark", exact=True)).to_be_visible()
    # Deleting asks first, in the page's own dialog; declining changes nothing.
    await page.get_by_role("button", name="Delete the recording", exact=True).click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Cancel", exact=True).click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#pl-controls")).to_be_visible()
    assert wav.is_file()
    await page.get_by_role("button", name="Delete the recording", exact=True).click()
    await dialog.get_by_role("button", name="Delete the recording", exact=True).click()
    await expect(page.locator("#rf-status")).to_have_text("audio deleted")
    await expect(page.locator("#pl-controls")).to_be_hidden()
    await expect(page.locator("#recording")).to_contain_text("security1")
    assert not wav.exists()
    assert [a for a in await audit_actions(bench, target, "security1") if a != "waveform"] == [
        "view", "confidential", "delete_audio"]
    # A supervisor no longer finds it.
    tab2 = await open_tab(browser, bench.base)
    await log_in(tab2.page, "supervisor1", PASSWORD)
    await tab2.page.get_by_role("link", name="Calls", exact=True).click()  # supervisors land on the dashboard
    await expect(tab2.page.locator("#results-body tr")).to_have_count(len(bench.calls) - 2)
    await expect(tab2.page.locator(f'#results-body tr[data-call-id="{target}"]')).to_have_count(0)
    # A supervisor gets no restricted actions on the calls it does see.
    await tab2.page.goto(f"/#/call/{bench.calls['mine']}")
    await expect(tab2.page.locator("#call-title")).to_have_text("Call from Alice <+4930111>")
    await expect(tab2.page.locator("#manage-box")).to_be_hidden()
    await tab.assert_clean()
    await tab2.assert_clean()


async def test_recording_pauses_are_listed_when_the_api_gives_them(bench: Bench, browser: Browser) -> None:
    # The call detail lists the recording_pauses rows (migration 003): a pause from the agent's key.
    await bench.pool.execute("INSERT INTO recording_pauses (call_id, seq, paused_at, paused_by, pause_source, "
                             "resumed_at, resumed_by, resume_source) SELECT id, 1, started_at + interval '1 second', "
                             "'agent 201', 'dtmf', started_at + interval '3 seconds', 'agent 201', 'dtmf' "
                             "FROM calls WHERE id = $1", uuid.UUID(bench.calls["mine"]))
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    await page.goto(f"/#/call/{bench.calls['mine']}")
    await expect(page.locator("#pauses tr")).to_have_count(1)
    await expect(page.locator("#pauses tr").first).to_contain_text("agent 201")
    await expect(page.locator("#pauses tr").first).to_contain_text("9:00:01")
    await page.goto(f"/#/call/{bench.calls['other']}")
    await expect(page.locator("#call-title")).to_have_text("Call from Carol <+4930222>")
    await expect(page.locator("#pauses-box")).to_be_hidden()
    await tab.assert_clean()


async def test_throttled_log_in_says_so_in_the_users_language(bench: Bench, browser: Browser) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.post(bench.base + "/api/v1/login", json={"username": "agent1", "password": "wrong!"}) as r:
                assert r.status == 401
    tab = await open_tab(browser, bench.base, locale="ru-RU")
    page = tab.page
    await page.goto("/")
    await page.get_by_label("Имя пользователя", exact=True).fill("agent1")
    await page.get_by_label("Пароль", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Войти", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text("Слишком много неудачных попыток входа. Попробуйте позже.")
    await expect(page.locator("#login-form")).to_be_visible()
    tab.errors.clear()  # the browser logs the 429 as a failed resource
    await tab.assert_clean()


async def test_the_audit_trail_pages_with_its_cursor(bench: Bench, browser: Browser) -> None:
    await bench.pool.execute("INSERT INTO audit_log (actor, role, action, details) "
                             "SELECT 'bulk', 'admin', 'export', jsonb_build_object('n', n) "
                             "FROM generate_series(1, 120) AS n")
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "auditor1", PASSWORD)
    await page.get_by_label("Who", exact=True).fill("bulk")
    await page.get_by_role("button", name="Search", exact=True).click()
    rows = page.locator("#audit-body tr")
    await expect(page.locator("#audit-page-no")).to_have_text("Page 1")
    await expect(rows).to_have_count(100)
    await expect(rows.first.locator("td.details")).to_have_text("n: 120")  # details in words, not JSON
    await page.get_by_role("button", name="Next", exact=True).click()
    await expect(page.locator("#audit-page-no")).to_have_text("Page 2")
    await expect(rows).to_have_count(20)
    await expect(rows.last.locator("td.details")).to_have_text("n: 1")
    await expect(page.get_by_role("button", name="Next", exact=True)).to_be_disabled()
    await page.get_by_role("button", name="Previous", exact=True).click()
    await expect(page.locator("#audit-page-no")).to_have_text("Page 1")
    await expect(rows).to_have_count(100)
    await tab.assert_clean()


async def test_every_filter_reaches_the_api(bench: Bench, browser: Browser) -> None:
    await bench.pool.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, 'vip', 't'), "
                             "($1, 'complaint', 't'), ($2, 'vip', 't')",
                             uuid.UUID(bench.calls["other"]), uuid.UUID(bench.calls["mine"]))
    tab = await open_tab(browser, bench.base)
    page = tab.page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/calls?" in r.url else None)
    await log_in(page, "admin1", PASSWORD)
    form = page.locator("#search-form")
    rows = page.locator("#results-body tr")
    await form.get_by_role("button", name="More filters", exact=True).click()

    async def search(expected: set[str]) -> None:
        await form.get_by_role("button", name="Search", exact=True).click()
        await expect(page.locator("#status")).to_have_text(f"Calls on this page: {len(expected)}.")
        assert {await r.get_attribute("data-call-id") for r in await rows.all()} == expected

    c = bench.calls
    await form.get_by_label("Recorded", exact=True).select_option("false")
    await search({c["unrecorded"]})
    await form.get_by_label("Consent", exact=True).select_option("declined")
    await search({c["unrecorded"]})
    await form.get_by_role("button", name="Clear", exact=True).click()
    await expect(rows).to_have_count(len(c))
    await form.get_by_label("From", exact=True).fill("2026-11-20T09:02:00")
    await form.get_by_label("To", exact=True).fill("2026-11-20T09:04:00")
    await search({c["party"], c["confidential"]})
    await form.get_by_label("Order", exact=True).select_option("asc")
    await search({c["party"], c["confidential"]})
    await expect(rows.first).to_have_attribute("data-call-id", c["party"])
    await form.get_by_role("button", name="Clear", exact=True).click()
    await form.get_by_label("Tags", exact=True).fill("vip, complaint")
    await search({c["other"]})
    await expect(rows.first).to_contain_text("complaint, vip")
    await form.get_by_label("Tags", exact=True).fill("vip")
    await search({c["other"], c["mine"]})
    await form.get_by_label("Tags", exact=True).fill("")
    await form.get_by_label("Agent (extension)", exact=True).fill("202")
    await search({c["other"], c["unrecorded"]})
    await form.get_by_label("Name contains", exact=True).fill("caro")
    await search({c["other"]})
    await form.get_by_label("Agent (extension)", exact=True).fill("")
    await form.get_by_label("Name contains", exact=True).fill("")
    await form.get_by_label("Direction", exact=True).select_option("outbound")
    await search(set())
    await expect(page.locator("#results-empty")).to_be_visible()
    await form.get_by_label("Direction", exact=True).select_option("inbound")
    await form.get_by_label("Min. duration, s", exact=True).fill("5")
    await form.get_by_label("Max. duration, s", exact=True).fill("7")
    await search(set(c.values()))
    await form.get_by_label("Min. duration, s", exact=True).fill("7")
    await search(set())
    last = requests[-1]
    for part in ("direction=inbound", "min_duration=7", "max_duration=7", "order=desc", "limit=50"):
        assert part in last, last
    await tab.assert_clean()
