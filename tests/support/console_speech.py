"""Speech analytics in the console tests: calls whose recording is the committed stereo clip, its
transcript made once by the real shipped model (so word times match the audio), and the player's seeks
as the page makes them.  Fixtures: ``engine``, ``clip_transcript`` (module scope), ``bench``, ``browser``."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from callrec.config.speech import SpeechSettings
from callrec.recording.files import measure
from callrec.speech.engine import Engine, EngineOptions, load_engine, transcribe_file
from callrec.speech.model import prepare_model
from callrec.speech.stats import transcript_stats
from callrec.speech.transcript import Interval, Segment, Track, Transcript, Word
from callrec.store.transcripts import load_transcript, save_transcript
from support import REPO
from support.console_browser import chromium
from support.opsapi import T0, Bench, insert_call, running_bench

CLIP = REPO / "tests" / "data" / "speech" / "stereo.wav"  # caller left, agent right (layout.json)
# How far the player may be from the word it was sent to when the test looks (it keeps playing).
SEEK_SLACK_S = 0.7


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    model = prepare_model(SpeechSettings(cache_dir=str(tmp_path_factory.mktemp("speech-cache"))))
    return load_engine(model, EngineOptions(threads=2))


@pytest.fixture(scope="module")
def clip_transcript(engine: Engine) -> Transcript:
    """The committed stereo clip transcribed once by the real model (English, as the call's language)."""
    return transcribe_file(engine, CLIP, "en")


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    async with running_bench(database, tmp_path) as b:
        yield b


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


async def clip_call(bench: Bench, transcript: Transcript | None, *, minutes: int = 10, agent: str = "202",
                    confidential: bool = False) -> str:
    """A call whose recording is the committed clip, with the clip's transcript stored (when given)."""
    async with bench.pool.acquire() as conn:
        call_id = await insert_call(conn, bench.rec_dir, started=T0 + timedelta(minutes=minutes), agent=agent,
                                    caller="+4930777", caller_name="Dora", seconds=7.6, confidential=confidential)
        rel = await conn.fetchval("SELECT recording_path FROM calls WHERE id = $1", uuid.UUID(call_id))
        shutil.copyfile(CLIP, bench.rec_dir / rel)
        facts = measure(bench.rec_dir / rel)
        await conn.execute("UPDATE calls SET recording_sha256 = $2, recording_bytes = $3, recording_duration = $4 "
                           "WHERE id = $1", uuid.UUID(call_id), facts["recording_sha256"], facts["recording_bytes"],
                           facts["recording_duration"])
        if transcript is not None:
            await save_transcript(conn, call_id, transcript.to_dict(), transcript_stats(transcript).to_dict(),
                                  recording_sha256=facts["recording_sha256"])
    return call_id


async def stored_word(bench: Bench, call_id: str, stem: str) -> dict[str, Any]:
    """The stored word (as the API serves it) that starts with ``stem``, and its speaker."""
    async with bench.pool.acquire() as conn:
        stored = await load_transcript(conn, call_id)
    assert stored is not None
    for seg in stored["segments"]:
        for w in seg["words"]:
            if w["text"].strip().lower().strip(".,!?").startswith(stem):
                return {**w, "speaker": seg["speaker"]}
    raise AssertionError(f"{stem!r} not in the transcript: {[s['text'] for s in stored['segments']]}")


def js_number(value: float, digits: int) -> str:
    """A number as the console shows it in English (toLocaleString: at most ``digits`` decimals, no
    trailing zeros)."""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


async def watch_seeks(page: Page) -> None:
    """Record where the player lands after each seek (a `seeked` event), for the assertions below."""
    await page.locator("#player").evaluate(
        "a => { window.__seeks = []; a.addEventListener('seeked', () => window.__seeks.push(a.currentTime)); }")


async def first_seek(page: Page) -> float:
    await page.wait_for_function("() => window.__seeks && window.__seeks.length > 0")
    seeks: list[float] = await page.evaluate("window.__seeks")
    return seeks[0]




def synthetic(caller: str, agent: str, *, agent_ms: int, duration_ms: int) -> Transcript:
    """A stereo transcript: the caller's line for 1 s, then the agent's for ``agent_ms``."""
    def track(speaker: str, channel: int, text: str, start: int, length: int) -> Track:
        words = text.split()
        step = length // len(words)
        ws = tuple(Word(" " + w, start + i * step, start + (i + 1) * step - 10, 0.9) for i, w in enumerate(words))
        return Track(speaker, channel, (Segment(start, start + length, " " + text, ws),),
                     (Interval(start, start + length),))
    return Transcript((track("caller", 0, caller, 0, 1000), track("agent", 1, agent, 1000, agent_ms)),
                      duration_ms, "en", model="whisper-base@test")
