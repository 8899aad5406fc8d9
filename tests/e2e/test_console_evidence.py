"""Signed evidence exports from the console (issue 13): the zip of one call (with its transcript when the box is
ticked) and of exactly the page of results on screen, downloaded in a real headless Chromium from the real ops API
and PostgreSQL; the manifest's signature checked with the key the test made; the audit entries; no action for a
role that may not take audio out; axe-core on the pages with the action, in English and Russian."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from support import REPO
from support.console_browser import Tab, chromium, log_in, open_tab
from support.console_speech import synthetic
from support.opsapi import PASSWORD, T0, Bench, audit_rows, insert_call, running_bench

from callrec.dataops.evidence import generate_key, load_public_key, verify_manifest
from callrec.speech.stats import transcript_stats
from callrec.store.transcripts import save_transcript

AXE = (REPO / "tests" / "data" / "axe" / "axe.min.js").read_text(encoding="utf-8")


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    """The ops bench with a signing key, a transcript for the call "mine", and 30 more recorded calls (two pages
    of 25 results)."""
    key = tmp_path / "signing.pem"
    generate_key(key)
    async with running_bench(database, tmp_path, {"integrity": {"signing_key": str(key)}}) as b:
        async with b.pool.acquire() as conn:
            tr = synthetic("I want a refund", "Let me check the invoice", agent_ms=2000, duration_ms=3000)
            sha = await conn.fetchval("SELECT recording_sha256 FROM calls WHERE id = $1", uuid.UUID(b.calls["mine"]))
            await save_transcript(conn, b.calls["mine"], tr.to_dict(), transcript_stats(tr).to_dict(),
                                  recording_sha256=sha)
            for n in range(30):
                b.calls[f"more{n}"] = await insert_call(conn, b.rec_dir, started=T0 + timedelta(hours=1, minutes=n),
                                                        agent="208", caller=f"+4930888{n:02d}")
        b.public_key = key.with_name(key.name + ".pub")  # type: ignore[attr-defined]
        yield b


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def tab_for(browser: Browser, bench: Bench, user: str, locale: str = "en-US") -> Tab:
    tab = await open_tab(browser, bench.base, locale=locale)
    await tab.page.set_viewport_size({"width": 1440, "height": 900})
    await log_in(tab.page, user, PASSWORD, labels=("Имя пользователя", "Пароль", "Войти") if locale == "ru-RU"
                 else ("User name", "Password", "Log in"))
    return tab


async def download_zip(page: Page, button: str, target: Path) -> dict[str, Any]:
    """Press the export button as a person would, save the download, check its signature; the manifest."""
    async with page.expect_download() as info:
        await page.get_by_role("button", name=button, exact=True).click()
    download = await info.value
    assert download.suggested_filename.startswith("evidence-") and download.suggested_filename.endswith(".zip")
    await download.save_as(target)
    assert zipfile.is_zipfile(target)
    return json.loads(zipfile.ZipFile(target).read("manifest.json"))


def signed(bench: Bench, target: Path) -> None:
    check = verify_manifest(target, load_public_key(bench.public_key.read_bytes()))  # type: ignore[attr-defined]
    assert check.ok, check.problems


async def test_one_calls_evidence_with_its_transcript(bench: Bench, browser: Browser, tmp_path: Path) -> None:
    tab = await tab_for(browser, bench, "supervisor1")
    page = tab.page
    mine = bench.calls["mine"]
    await page.goto(f"/#/call/{mine}")
    box = page.locator("#evidence-box")
    await expect(box).to_be_visible()
    await expect(box).to_have_class("card restricted")  # set apart like the other restricted actions
    await box.get_by_label("with transcripts").check()
    manifest = await download_zip(page, "Export evidence (zip)", tmp_path / "one.zip")
    signed(bench, tmp_path / "one.zip")
    assert [c["id"] for c in manifest["calls"]] == [mine]
    kinds = {(f.get("call_id"), f["kind"]) for f in manifest["files"]}
    assert {(mine, "recording"), (mine, "transcript")} <= kinds
    names = zipfile.ZipFile(tmp_path / "one.zip").namelist()
    assert f"transcripts/{mine}.json" in names
    await expect(page.locator("#status")).to_contain_text("Downloaded evidence-")
    # Audited: the call exported as evidence (with its transcript), and the export itself.
    [entry] = await audit_rows(bench, action="evidence_export", call_id=uuid.UUID(mine))
    assert entry["actor"] == "supervisor1" and json.loads(entry["details"])["transcripts"] is True
    [export] = [r for r in await audit_rows(bench, action="export", actor="supervisor1")
                if json.loads(r["details"])["format"] == "evidence-zip"]
    assert json.loads(export["details"])["call_ids"] == [mine]
    # Without the box: no transcript in the zip.
    await box.get_by_label("with transcripts").uncheck()
    manifest = await download_zip(page, "Export evidence (zip)", tmp_path / "bare.zip")
    signed(bench, tmp_path / "bare.zip")
    assert not [f for f in manifest["files"] if f.get("kind") == "transcript"]
    assert not [n for n in zipfile.ZipFile(tmp_path / "bare.zip").namelist() if n.startswith("transcripts/")]
    await tab.assert_clean()


async def test_the_page_on_screen_is_what_the_zip_holds(bench: Bench, browser: Browser, tmp_path: Path) -> None:
    tab = await tab_for(browser, bench, "admin1")
    page = tab.page
    await page.goto("/#/search?agent=208&limit=25")
    await expect(page.locator("#results-count")).to_have_text("Calls found: 30")
    await page.get_by_role("button", name="Next", exact=True).click()
    await expect(page.locator("#page-no")).to_have_text("Page 2")
    rows = page.locator("#results-body tr[data-call-id]")
    await expect(rows).to_have_count(5)
    shown = [await r.get_attribute("data-call-id") for r in await rows.all()]
    await expect(page.locator("#evidence-list")).to_be_visible()
    manifest = await download_zip(page, "Evidence zip of these calls", tmp_path / "page.zip")
    signed(bench, tmp_path / "page.zip")
    assert sorted(c["id"] for c in manifest["calls"]) == sorted(shown)
    assert len(await audit_rows(bench, action="evidence_export", actor="admin1")) == 5
    await tab.assert_clean()


async def test_a_role_without_audio_gets_no_evidence_action(bench: Bench, browser: Browser) -> None:
    tab = await tab_for(browser, bench, "auditor1")
    page = tab.page
    await page.goto(f"/#/call/{bench.calls['other']}")
    await expect(page.locator("#call-body")).to_be_visible()
    await expect(page.locator("#facts")).to_contain_text(bench.calls["other"])
    await expect(page.locator("#evidence-box")).to_be_hidden()
    await expect(page.locator("#evidence-list")).to_be_hidden()
    await expect(page.get_by_role("button", name="Export evidence (zip)")).to_have_count(0)
    await tab.assert_clean()


@pytest.mark.parametrize("locale", ["en-US", "ru-RU"])
async def test_axe_finds_no_violations_with_the_evidence_actions(bench: Bench, browser: Browser, locale: str) -> None:
    tab = await tab_for(browser, bench, "admin1", locale)
    page = tab.page
    for where, shown in ((f"/#/call/{bench.calls['mine']}", "#evidence-box"),
                         ("/#/search?agent=208&limit=25", "#evidence-list")):
        await page.goto(where)
        await expect(page.locator(shown)).to_be_visible()
        await page.evaluate(AXE)  # by the test driver: the page's CSP stays in force
        violations = await page.evaluate("""async () => {
            const r = await axe.run(document);
            return r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(' | '));
        }""")
        assert violations == [], (where, violations)
    if locale == "ru-RU":
        await expect(page.locator("#evidence-page")).to_have_text("Архив доказательств по этим звонкам")
    await tab.assert_clean()
