"""The console for daily use (issue 13, items 1 and 2): the dashboard and the calls list that keeps its place,
in a real headless Chromium against the real ops API and PostgreSQL (calls with real WAV files, as in
test_console.py), with axe-core (vendored from npm, tests/data/axe) for accessibility.  The run also saves
the screenshots docs/console.md shows.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, Page, expect
from support import REPO
from support.console_browser import Tab, chromium, log_in, open_tab
from support.opsapi import PASSWORD, Bench, insert_call, running_bench

from callrec.store import users

AXE = (REPO / "tests" / "data" / "axe" / "axe.min.js").read_text(encoding="utf-8")
DOCS = REPO / "docs"


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    """The ops bench, plus agent 204 (user ivan) with calls yesterday and today, so the date presets have
    something to find; the bench's own calls are on 2026-11-20."""
    async with running_bench(database, tmp_path) as b:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        yesterday = today - timedelta(days=1)
        c = b.calls
        async with b.pool.acquire() as conn:
            await users.add_user(conn, "ivan", "agent", PASSWORD, "204")
            for n, (label, started, agent, consent) in enumerate((
                    ("y204_declined_1", yesterday + timedelta(hours=9), "204", "declined"),
                    ("y204_declined_2", yesterday + timedelta(hours=15), "204", "declined"),
                    ("y204_granted", yesterday + timedelta(hours=10), "204", "granted"),
                    ("y205_declined", yesterday + timedelta(hours=11), "205", "declined"),
                    ("t204_declined", today + timedelta(minutes=1), "204", "declined"),
                    ("w204_declined", yesterday - timedelta(days=2), "204", "declined"))):
                c[label] = await insert_call(conn, b.rec_dir if consent != "declined" else None, started=started,
                                             agent=agent, consent=consent, recorded=consent != "declined",
                                             caller=f"+7916739{2850 + n}", caller_name=f"Caller {n}",
                                             seconds=4.4 + n)
            c["outbound"] = await insert_call(conn, b.rec_dir, started=yesterday + timedelta(hours=12), agent="204",
                                              direction="outbound", caller="204", called="+74951234567",
                                              caller_name="ivan")
            await conn.execute("UPDATE calls SET recording_status = 'failed', recording_error = 'disk full' "
                               "WHERE id = $1", uuid.UUID(c["y204_granted"]))
        yield b


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def wide_tab(browser: Browser, bench: Bench, locale: str = "en-US") -> Tab:
    tab = await open_tab(browser, bench.base, locale=locale)
    await tab.page.set_viewport_size({"width": 1440, "height": 900})
    return tab


async def shown_ids(page: Page) -> list[str]:
    rows = await page.locator("#results-body tr[data-call-id]").all()
    return [await r.get_attribute("data-call-id") or "" for r in rows]


async def sql_ids(bench: Bench, where: str, *args: object) -> set[str]:
    rows = await bench.pool.fetch(f"SELECT id FROM calls WHERE NOT confidential AND {where}", *args)
    return {str(r["id"]) for r in rows}


async def axe_violations(page: Page) -> list[str]:
    await page.evaluate(AXE)  # evaluated by the test driver: the page's CSP (no inline script) stays in force
    return await page.evaluate("""async () => {
        const r = await axe.run(document);
        return r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(' | '));
    }""")


# --- the dashboard --------------------------------------------------------------------------------------------

async def test_dashboard_figures_equal_sql_and_link_to_their_calls(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    # The supervisor's landing page.
    await expect(page).to_have_url(re.compile("#/dashboard$"))
    await expect(page.locator("#dash-total")).not_to_be_empty()
    now = datetime.now(UTC)
    since = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
    until = since + timedelta(days=30)
    in_range = "started_at >= $1 AND started_at < $2"
    total = len(await sql_ids(bench, in_range, since, until))
    assert total == len(bench.calls) - 1  # every seeded call but the confidential one
    await expect(page.locator("#dash-total")).to_have_text(str(total))
    recorded = len(await sql_ids(bench, in_range + " AND recording_status = 'ready'", since, until))
    await expect(page.locator("#dash-recorded")).to_contain_text(f"{recorded} ({round(100 * recorded / total)} %)")
    await expect(page.locator("#dash-problem-failed")).to_have_text("1")
    declined = await sql_ids(bench, in_range + " AND consent = 'declined'", since, until)
    await expect(page.locator("#dash-declined")).to_have_text(str(len(declined)))
    # Per agent: counts and decline rate, the agent's name beside the extension.
    row = page.locator('#dash-agents tr[data-agent="204"]')
    mine = await sql_ids(bench, in_range + " AND agent = '204'", since, until)
    mine_declined = await sql_ids(bench, in_range + " AND agent = '204' AND consent = 'declined'", since, until)
    await expect(row.locator("th")).to_have_text("204 · ivan")
    await expect(row.locator("td").nth(0)).to_have_text(str(len(mine)))
    await expect(row.locator("td").nth(1)).to_have_text(str(len(mine_declined)))
    await expect(row.locator("td").nth(2)).to_have_text(f"{round(100 * len(mine_declined) / len(mine))} %")
    DOCS.mkdir(exist_ok=True)
    await page.screenshot(path=str(DOCS / "console-dashboard.png"), full_page=True)
    # Each figure opens the list of exactly its calls.
    await page.locator("#dash-problem-failed a").click()
    await expect(page).to_have_url(re.compile(r"#/search\?.*recording=failed"))
    await expect(page.locator("#results-body tr[data-call-id]")).to_have_count(1)
    assert await shown_ids(page) == [bench.calls["y204_granted"]]
    await page.go_back()
    await expect(page.locator("#view-dashboard")).to_be_visible()
    await row.locator("td").nth(1).get_by_role("link").click()
    await expect(page.locator("#results-count")).to_have_text(f"Calls found: {len(mine_declined)}")
    assert set(await shown_ids(page)) == mine_declined
    await tab.assert_clean()


async def test_each_rules_alert_figure_opens_that_rules_alerts(bench: Bench, browser: Browser) -> None:
    c = bench.calls
    seeded = {"refund": ["y204_declined_1", "y204_declined_2"], "secrets": ["y205_declined"]}
    for rule, labels in seeded.items():
        for label in labels:
            await bench.pool.execute("INSERT INTO alerts (rule, call_id, kind, phrase, speaker, offset_ms) "
                                     "VALUES ($1, $2, 'said', $1, 'caller', 1000)", rule, uuid.UUID(c[label]))
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await expect(page.locator("#dash-alerts-total")).to_have_text("3")
    await page.get_by_role("link", name="Alerts of rule refund: 2").click()
    await expect(page).to_have_url(re.compile(r"#/alerts\?rule=refund$"))
    rows = page.locator("#alerts-body tr")
    await expect(rows).to_have_count(2)
    assert {await r.get_attribute("data-call-id") for r in await rows.all()} == {c[x] for x in seeded["refund"]}
    await page.go_back()
    await page.locator("#dash-alerts-total a").click()  # every rule again
    await expect(rows).to_have_count(3)
    await tab.assert_clean()


async def test_yesterdays_declined_calls_of_agent_204_in_two_actions(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    # 1: the declined figure of agent 204 on the dashboard; 2: the "Yesterday" preset.
    await page.locator('#dash-agents tr[data-agent="204"] td').nth(1).get_by_role("link").click()
    await expect(page.locator("#view-search")).to_be_visible()
    await page.get_by_role("button", name="Yesterday", exact=True).click()
    c = bench.calls
    want = {c["y204_declined_1"], c["y204_declined_2"]}
    await expect(page.locator("#results-count")).to_have_text("Calls found: 2")
    assert set(await shown_ids(page)) == want
    # The chips name the active filters; one click removes one.
    chips = page.locator("#chips li")
    await expect(chips).to_have_count(4)
    await expect(page.locator("#chips")).to_contain_text("Agent (extension): 204")
    await expect(page.locator("#chips")).to_contain_text("Consent: declined")
    await page.get_by_role("button", name="Remove filter Consent: declined").click()
    await expect(page.locator("#results-count")).to_have_text("Calls found: 4")  # + granted, outbound
    await tab.assert_clean()


# --- the list keeps its place ---------------------------------------------------------------------------------

async def test_reload_back_and_share_keep_the_search_and_its_place(bench: Bench, browser: Browser) -> None:
    async with bench.pool.acquire() as conn:  # enough rows to scroll
        for n in range(60):
            await insert_call(conn, None, started=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
                              agent="207", recorded=False, caller=f"+4930700{n:02d}")
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    await page.get_by_label("Number", exact=True).fill("+4930700*")
    await page.get_by_role("button", name="More filters").click()
    await page.get_by_label("Per page", exact=True).select_option("100")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 60")
    await expect(page).to_have_url(re.compile(r"#/search\?number=%2B4930700\*&limit=100$"))
    await page.reload()
    await expect(page.locator("#results-count")).to_have_text("Calls found: 60")
    await expect(page.get_by_label("Number", exact=True)).to_have_value("+4930700*")
    # Open the 50th row, then come back: the same row is in view, where it was.
    row = page.locator("#results-body tr[data-call-id]").nth(49)
    await row.scroll_into_view_if_needed()
    y = await page.evaluate("window.scrollY")
    assert y > 300
    target = await row.get_attribute("data-call-id")
    await row.locator("td").nth(2).click()  # whole-row click (not on the link)
    await expect(page).to_have_url(re.compile(f"#/call/{target}$"))
    await page.get_by_role("link", name="← Back to results").click()
    await expect(page.locator("#view-search")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"#/search\?number="))
    assert abs(await page.evaluate("window.scrollY") - y) < 5
    await expect(page.locator(f'#results-body tr[data-call-id="{target}"] a')).to_be_focused()
    # The browser's back button, too.
    await page.locator(f'#results-body tr[data-call-id="{target}"] a').click()
    await expect(page).to_have_url(re.compile(f"#/call/{target}$"))
    await page.go_back()
    await expect(page.locator("#view-search")).to_be_visible()
    assert abs(await page.evaluate("window.scrollY") - y) < 5
    # A shared link opens the same search in another browser profile.
    url = page.url
    other = await wide_tab(browser, bench)
    await log_in(other.page, "admin1", PASSWORD)
    await other.page.goto(url)
    await expect(other.page.locator("#results-count")).to_have_text("Calls found: 60")
    await tab.assert_clean()
    await other.assert_clean()


async def test_the_page_of_results_is_in_the_address(bench: Bench, browser: Browser) -> None:
    """Page 2 (a keyset cursor in the address): a reload, Back from a call (after a reload, too) and a shared
    link land on page 2 with the same rows, and Back from a call restores the scroll."""
    async with bench.pool.acquire() as conn:
        for n in range(60):
            await insert_call(conn, None, started=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
                              agent="207", recorded=False, caller=f"+4930701{n:02d}")
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    await page.get_by_label("Number", exact=True).fill("+4930701*")
    await page.get_by_role("button", name="More filters").click()
    await page.get_by_label("Per page", exact=True).select_option("25")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 60")
    first_page = await shown_ids(page)
    await page.get_by_role("button", name="Next", exact=True).click()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    await expect(page).to_have_url(re.compile(r"#/search\?number=%2B4930701\*&limit=25&page=2&cursor=[^&]+$"))
    second_page = await shown_ids(page)
    assert len(second_page) == 25 and not set(second_page) & set(first_page)
    # A reload: still page 2, the same first row, and Previous still leads to page 1 (the history entry's state).
    await page.reload()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    await expect(page.locator("#results-body tr[data-call-id]").first).to_have_attribute("data-call-id", second_page[0])
    assert await shown_ids(page) == second_page
    await expect(page.locator("#results-count")).to_have_text("Calls found: 60")
    await expect(page.get_by_role("button", name="Previous", exact=True)).to_be_enabled()
    # Back from a call: page 2, scrolled where it was.
    row = page.locator("#results-body tr[data-call-id]").nth(22)
    await row.scroll_into_view_if_needed()
    y = await page.evaluate("window.scrollY")
    assert y > 300
    target = await row.get_attribute("data-call-id")
    await row.locator("td").nth(2).click()
    await expect(page).to_have_url(re.compile(f"#/call/{target}$"))
    await page.go_back()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    assert await shown_ids(page) == second_page
    await page.wait_for_function(f"Math.abs(window.scrollY - {y}) < 5")
    await expect(page.locator(f'#results-body tr[data-call-id="{target}"] a')).to_be_focused()
    # A reload on the call page, then Back: the list is fetched again, at page 2 and the same place.
    await page.locator(f'#results-body tr[data-call-id="{target}"] a').click()
    await expect(page).to_have_url(re.compile(f"#/call/{target}$"))
    await page.reload()
    await expect(page.locator("#view-call")).to_be_visible()
    await page.go_back()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    assert await shown_ids(page) == second_page
    await page.wait_for_function(f"Math.abs(window.scrollY - {y}) < 5")
    # Previous and Next move along the pages, each in the address; the browser's Back returns to page 2.
    await page.get_by_role("button", name="Previous", exact=True).click()
    await expect(page.locator("#page-no")).to_have_text("Page 1")
    assert await shown_ids(page) == first_page
    await expect(page).to_have_url(re.compile(r"limit=25$"))
    await page.go_back()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    assert await shown_ids(page) == second_page
    # A shared link: another profile lands on page 2 with the same rows; its earlier pages start from the first.
    url = page.url
    other = await wide_tab(browser, bench)
    await log_in(other.page, "admin1", PASSWORD)
    await other.page.goto(url)
    await expect(other.page.locator("#page-no")).to_have_text("Page 2")
    assert await shown_ids(other.page) == second_page
    await other.page.get_by_role("button", name="First page", exact=True).click()
    await expect(other.page.locator("#page-no")).to_have_text("Page 1")
    assert await shown_ids(other.page) == first_page
    await tab.assert_clean()
    await other.assert_clean()


async def test_keys_move_open_and_search(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    await expect(page.locator("#results-body tr[data-call-id]")).to_have_count(len(bench.calls))
    ids = await shown_ids(page)
    await page.locator("#search-title").click()
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    await page.keyboard.press("k")
    await expect(page.locator("#results-body tr.selected")).to_have_attribute("data-call-id", ids[1])
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(f"#/call/{ids[1]}$"))
    await page.go_back()
    await expect(page.locator("#view-search")).to_be_visible()
    await page.locator("#search-title").click()
    await page.keyboard.press("/")
    await expect(page.get_by_label("Number", exact=True)).to_be_focused()
    await page.keyboard.type("+4930222")
    await page.keyboard.press("Enter")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 1")
    await tab.assert_clean()


async def test_saved_search_round_trip(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.goto("/#/search?agent=204&consent=declined")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 4")
    await page.get_by_role("button", name="Save this search").click()
    await page.get_by_label("Name of the search", exact=True).fill("Refusals of 204")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.locator("#status")).to_have_text("Search “Refusals of 204” saved.")
    row = await bench.pool.fetchrow("SELECT owner, query FROM saved_searches")
    assert row["owner"] == "supervisor1" and row["query"] == "agent=204&consent=declined"
    # Another search, a reload: the saved one brings its search back.
    await page.goto("/#/search")
    await page.reload()
    await expect(page.locator("#results-count")).to_have_text(f"Calls found: {len(bench.calls) - 1}")
    await page.get_by_label("Saved searches", exact=True).select_option(label="Refusals of 204")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 4")
    await expect(page.locator("#f-agent")).to_have_value("204")  # the calls list's field (the audit page has one too)
    # Nobody else sees it.
    other = await wide_tab(browser, bench)
    await log_in(other.page, "admin1", PASSWORD)
    await expect(other.page.locator("#saved-list option")).to_have_count(1)
    await page.get_by_role("button", name="Delete", exact=True).click()
    await expect(page.locator("#status")).to_have_text("Search “Refusals of 204” deleted.")
    assert await bench.pool.fetchval("SELECT count(*) FROM saved_searches") == 0
    actions = [r["action"] for r in await bench.pool.fetch(
        "SELECT action FROM audit_log WHERE actor = 'supervisor1' AND action LIKE 'saved_search%' ORDER BY id")]
    assert actions == ["saved_search_add", "saved_search_delete"]
    await tab.assert_clean()
    await other.assert_clean()


async def test_export_is_what_is_on_screen_with_local_times(bench: Bench, browser: Browser) -> None:
    tab = await open_tab(browser, bench.base)
    await tab.context.close()
    context = await browser.new_context(base_url=bench.base, locale="en-US", timezone_id="Europe/Moscow",
                                        viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    await log_in(page, "supervisor1", PASSWORD)
    await page.goto("/#/search?agent=204")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 6")
    # A choice on screen is a search of its own: the list and the export follow it.
    await page.get_by_role("button", name="More filters").click()
    await page.get_by_label("Consent", exact=True).select_option("declined")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 4")
    on_screen = await shown_ids(page)
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export CSV", exact=True).click()
    download = await info.value
    rows = list(csv.DictReader(io.StringIO(Path(await download.path()).read_text("utf-8"))))
    assert [r["id"] for r in rows] == on_screen
    for r in rows:
        raw = datetime.fromisoformat(r["started_at"])
        assert r["time_zone"] == "Europe/Moscow"
        assert r["started_local"] == (raw + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
        assert r["duration_rounded"] == str(round(float(r["duration"])))
        assert r["agent_name"] == "ivan"
    await context.close()


async def test_an_impossible_filter_says_so_in_the_users_language(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench, locale="ru-RU")
    page = tab.page
    await log_in(page, "admin1", PASSWORD, labels=("Имя пользователя", "Пароль", "Войти"))
    await page.get_by_role("button", name="Ещё фильтры").click()
    await page.get_by_label("Длительность от, с", exact=True).fill("30")
    await page.get_by_label("Длительность до, с", exact=True).fill("10")
    await page.get_by_role("button", name="Найти", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text(
        "Минимальная длительность больше максимальной: таких звонков не бывает. Измените одно из значений.")
    await tab.assert_clean()


async def test_outbound_calls_are_named_by_the_called_party(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    link = page.locator(f'#results-body tr[data-call-id="{bench.calls["outbound"]}"] a')
    await expect(link).to_have_attribute("aria-label", re.compile(r"^Open call to \+74951234567 at "))
    await expect(page.locator(f'#results-body tr[data-call-id="{bench.calls["outbound"]}"]')).to_contain_text(
        "204 · ivan")
    await tab.assert_clean()


# --- accessibility, both languages; the list's screenshot --------------------------------------------------

@pytest.mark.parametrize("locale", ["en-US", "ru-RU"])
async def test_axe_finds_no_violations_on_the_dashboard_and_the_list(bench: Bench, browser: Browser,
                                                                     locale: str) -> None:
    """Also the log-in page and the alerts page (the call and audit pages: test_console_player.py)."""
    tab = await wide_tab(browser, bench, locale=locale)
    page = tab.page
    labels = ("User name", "Password", "Log in") if locale == "en-US" else ("Имя пользователя", "Пароль", "Войти")
    await page.goto("/")
    await expect(page.locator("#login-form")).to_be_visible()
    assert await axe_violations(page) == [], "log-in page"
    await log_in(page, "supervisor1", PASSWORD, labels=labels)
    await expect(page.locator("#dash-total")).not_to_be_empty()
    assert await axe_violations(page) == []
    await page.goto("/#/alerts")
    await expect(page.locator("#alerts-body tr").or_(page.locator("#alerts-empty"))).to_be_visible()
    assert await axe_violations(page) == [], "alerts page"
    await page.goto("/#/search?consent=declined")
    await expect(page.locator("#results-count")).not_to_be_empty()
    await page.locator("#filters-toggle").click()
    assert await axe_violations(page) == []
    if locale == "en-US":
        await page.locator("#filters-toggle").click()
        await page.goto("/#/search")
        await expect(page.locator("#results-count")).to_have_text(f"Calls found: {len(bench.calls) - 1}")
        await page.screenshot(path=str(DOCS / "console-calls.png"))
    await tab.assert_clean()


async def test_any_written_form_of_a_number_finds_its_call(bench: Bench, browser: Browser) -> None:
    tab = await wide_tab(browser, bench)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    target = bench.calls["y204_declined_1"]  # caller +79167392850
    for form in ("+7 916 739-28-50", "+7 (916) 739 28 50", "79167392850", "89167392850", "7392850"):
        await page.get_by_label("Number", exact=True).fill(form)
        await page.get_by_role("button", name="Search", exact=True).click()
        # This search's answer (the URL follows it), not the last one's.
        await expect(page).to_have_url(re.compile(re.escape("#/search?" + urlencode({"number": form})) + "$"))
        await expect(page.locator("#results-count")).to_have_text("Calls found: 1")
        assert await shown_ids(page) == [target], form
    # A reload keeps the number as it was typed.
    await page.reload()
    await expect(page.get_by_label("Number", exact=True)).to_have_value("7392850")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 1")
    await tab.assert_clean()
