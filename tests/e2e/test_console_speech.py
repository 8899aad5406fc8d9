"""Speech analytics in the web console, in a real headless Chromium, against the real ops API and
PostgreSQL: the transcript beside the player (made by the real shipped model from a committed clip, so
word times match the audio), the current word following playback, a click on a word or on a search hit
seeking the player there, talk statistics, the "said" search with its hit list, talk filters, and
transcription progress.  The alerts page: test_console_alerts.py.
"""

from __future__ import annotations

import re
import uuid

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
    js_number,
    stored_word,
    synthetic,
    watch_seeks,
)
from support.opsapi import PASSWORD, Bench

from callrec.speech.stats import transcript_stats
from callrec.speech.transcript import Transcript
from callrec.store.transcripts import save_transcript

__all__ = ["bench", "browser", "clip_transcript", "engine"]  # fixtures used by name


async def test_transcript_beside_the_player_word_click_seeks_and_highlights(bench: Bench, browser: Browser,
                                                                           clip_transcript: Transcript) -> None:
    call_id = await clip_call(bench, clip_transcript)
    word = await stored_word(bench, call_id, "account")
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.goto(f"/#/call/{call_id}")
    turns = page.locator("#transcript li.turn")
    await expect(turns.first).to_be_visible()
    # The dialogue: caller and agent turns in time order, each with its time.
    speakers = [await t.get_attribute("data-speaker") for t in await turns.all()]
    assert speakers[:2] == ["caller", "agent"] and set(speakers) == {"caller", "agent"}
    await expect(turns.first.locator(".speaker")).to_have_text("Caller")
    await expect(turns.nth(1).locator(".speaker")).to_have_text("Agent")
    await expect(turns.first).to_contain_text("invoice")
    await expect(page.locator("#transcript-state")).to_contain_text("Transcribed")
    # Talk statistics, as stored with the transcript.
    async with bench.pool.acquire() as conn:
        talk = await conn.fetchrow("SELECT * FROM transcripts WHERE call_id = $1", uuid.UUID(call_id))
    assert talk["overtalk_ms"] > 0  # the clip's last two turns overlap
    await expect(page.locator("#talk-ratio")).to_have_text(f"{js_number(talk['agent_talk_ratio'] * 100, 0)} %")
    await expect(page.locator("#talk-silence")).to_have_text(f"{js_number(talk['silence_share'] * 100, 0)} %")
    await expect(page.locator("#talk-overtalk")).to_have_text(f"{js_number(talk['overtalk_ms'] / 1000, 1)} s")
    await expect(page.locator("#talk-longest")).to_have_text(
        f"{js_number(talk['longest_silence_ms'] / 1000, 1)} s")
    caller_s = round(talk["caller_talk_ms"] / 1000)
    await expect(page.locator("#talk-caller")).to_have_text(f"0:{caller_s:02d}")
    # Nothing is fetched before a click (preload="none"); a click on a word plays from it.
    await watch_seeks(page)
    target = page.locator("#transcript .word", has_text="account").first
    await target.click()
    landed = await first_seek(page)
    assert abs(landed - word["start_ms"] / 1000) < SEEK_SLACK_S, (landed, word)
    # The word being played is highlighted, and it follows playback (timeupdate).
    await expect(page.locator("#transcript .word.current")).to_have_count(1)
    await page.wait_for_function("() => document.getElementById('player').currentTime > 0")
    await tab.assert_clean()


async def test_said_search_lists_hits_and_a_hit_opens_the_call_at_the_word(bench: Bench, browser: Browser,
                                                                          clip_transcript: Transcript) -> None:
    """The issue's test: search by a keyword, click the hit, the player is at the word (±0.7 s)."""
    call_id = await clip_call(bench, clip_transcript)
    word = await stored_word(bench, call_id, "invoice")
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.get_by_role("link", name="Calls", exact=True).click()  # supervisors land on the dashboard
    await page.get_by_label("Said", exact=True).fill("invoice")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(page.locator("#results-body tr[data-call-id]")).to_have_count(1)
    await expect(page.locator("#results-body tr[data-call-id]")).to_have_attribute("data-call-id", call_id)
    hit = page.locator(f'tr[data-hits-for="{call_id}"] a.hit')
    await expect(hit).to_have_count(1)
    # Speaker, moment and the words around the hit, the hit marked (as text: <mark>, no markup of data).
    await expect(hit.locator(".hit-speaker")).to_have_text(word["speaker"].capitalize())
    seconds = word["start_ms"] // 1000
    await expect(hit.locator(".hit-time")).to_have_text(f"{seconds // 60}:{seconds % 60:02d}")
    await expect(hit.locator("mark")).to_contain_text("invoice")
    await expect(hit.locator(".snippet")).to_contain_text("calling about my")
    # The list's transcript column summarises the talk statistics.
    await expect(page.locator(f'tr[data-call-id="{call_id}"] .transcript-summary')).to_contain_text("silence")
    await watch_seeks(page)
    await hit.click()
    await expect(page).to_have_url(re.compile(rf"#/call/{call_id}/at/\d+$"))
    landed = await first_seek(page)
    assert abs(landed - word["start_ms"] / 1000) < SEEK_SLACK_S, (landed, word)
    await expect(page.locator("#player-state")).to_have_text("Playing")
    await tab.assert_clean()


async def test_progress_while_transcribing_then_the_dialogue_appears(bench: Bench, browser: Browser,
                                                                     clip_transcript: Transcript) -> None:
    call_id = await clip_call(bench, None)
    async with bench.pool.acquire() as conn:
        await conn.execute("INSERT INTO speech_jobs (call_id, state, progress, started_at) "
                           "VALUES ($1, 'running', 0.4, now())", uuid.UUID(call_id))
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "admin1", PASSWORD)
    await expect(page.locator(f'tr[data-call-id="{call_id}"] .transcript-summary')).to_have_text("Transcribing 40 %")
    await page.goto(f"/#/call/{call_id}")
    await expect(page.locator("#transcript-state")).to_have_text("Transcribing 40 %")
    await expect(page.locator("#transcript li.turn")).to_have_count(0)
    await expect(page.locator("#talk-box")).to_be_hidden()
    # The job finishes: the open page picks the transcript up by itself.
    async with bench.pool.acquire() as conn:
        sha = await conn.fetchval("SELECT recording_sha256 FROM calls WHERE id = $1", uuid.UUID(call_id))
        await save_transcript(conn, call_id, clip_transcript.to_dict(),
                              transcript_stats(clip_transcript).to_dict(), recording_sha256=sha)
        await conn.execute("UPDATE speech_jobs SET state = 'done', progress = 1, done_at = now() WHERE call_id = $1",
                           uuid.UUID(call_id))
    await expect(page.locator("#transcript-state")).to_contain_text("Transcribed")
    await expect(page.locator("#transcript li.turn").first).to_contain_text("invoice")
    await expect(page.locator("#talk-box")).to_be_visible()
    # In Russian too.
    await page.locator("#lang").select_option("ru")
    await expect(page.locator("#h-transcript")).to_have_text("Расшифровка")
    await expect(page.locator("#transcript li.turn .speaker").first).to_have_text("Клиент")
    await tab.assert_clean()


async def test_talk_filters_narrow_the_list_and_said_text_is_never_markup(bench: Bench, browser: Browser) -> None:
    quiet = await clip_call(bench, synthetic("hello there", "one moment please", agent_ms=1000, duration_ms=7600),
                            minutes=20)
    chatty = await clip_call(bench, synthetic("<img src=x onerror=alert(1)> tariff",
                                              "our tariff is the best tariff we have", agent_ms=6000,
                                              duration_ms=7600), minutes=21)
    tab = await open_tab(browser, bench.base)
    page = tab.page
    await log_in(page, "supervisor1", PASSWORD)
    await page.get_by_role("link", name="Calls", exact=True).click()  # supervisors land on the dashboard
    await page.get_by_role("button", name="More filters", exact=True).click()
    rows = page.locator("#results-body tr[data-call-id]")
    await page.get_by_label("Silence over, %", exact=True).fill("50")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-call-id", quiet)
    await page.get_by_label("Silence over, %", exact=True).fill("")
    await page.get_by_label("Agent talks over, %", exact=True).fill("70")
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-call-id", chatty)
    # What a caller said reaches the page as text: the markup in it shows, it does not run.
    await page.get_by_label("Agent talks over, %", exact=True).fill("")
    await page.get_by_label("Said", exact=True).fill("tariff")
    await page.get_by_role("button", name="Search", exact=True).click()
    hits = page.locator(f'tr[data-hits-for="{chatty}"] a.hit')
    await expect(hits.first).to_contain_text("<img src=x onerror=alert(1)>")
    assert await page.locator("#results img").count() == 0
    await page.goto(f"/#/call/{chatty}")
    await expect(page.locator("#transcript li.turn").first).to_contain_text("<img")
    assert await page.locator("#transcript img").count() == 0
    await tab.assert_clean()
