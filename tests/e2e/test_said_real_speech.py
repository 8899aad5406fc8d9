"""Search finds real speech: tests/data/speech/ru.wav transcribed by the shipped model (no mocks), stored with
``save_transcript``, found through the API by another form of a word it contains, with the offset at the word."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import aiohttp
from support import REPO
from support.opsapi import Bench, call

from callrec.config.speech import SpeechSettings
from callrec.speech.engine import EngineOptions, load_engine, transcribe_file
from callrec.speech.model import prepare_model
from callrec.speech.stats import transcript_stats
from callrec.store.transcripts import save_transcript

DATA = REPO / "tests" / "data" / "speech"
LAYOUT = json.loads((DATA / "layout.json").read_text(encoding="utf-8"))


async def test_real_speech_found_by_another_word_form(bench: Bench, http: aiohttp.ClientSession,
                                                      tmp_path: Path) -> None:
    engine = load_engine(prepare_model(SpeechSettings(cache_dir=str(tmp_path / "speech"))), EngineOptions(threads=2))
    t = transcribe_file(engine, DATA / "ru.wav", "ru")
    # "Добрый день, я хочу расторгнуть договор." is spoken from 0.8 s to 3.835 s.
    spoken = next(u for u in LAYOUT["ru.wav"] if "договор" in u["text"])
    words = [w for _, w in t.words()]
    said = [w for w in words if w.text.strip(" .,").lower().startswith("договор")]
    assert said, [w.text for w in words]
    word = said[0]
    call_id = bench.calls["mine"]
    async with bench.pool.acquire() as conn:
        await save_transcript(conn, call_id, t.to_dict(), transcript_stats(t).to_dict(), recording_sha256="ab" * 32)

    # "договора" (genitive) finds "договор" as the model wrote it; the hit points at the word.
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls?said=" + quote("договора"), "agent")
    assert st == 200
    item, = json.loads(body)["items"]
    hit, = item["hits"]
    assert item["id"] == call_id and "fuzzy" not in hit and hit["speaker"] == "mixed"
    assert abs(hit["offset_ms"] - word.start_ms) <= 700
    assert spoken["start"] * 1000 - 700 <= hit["offset_ms"] <= spoken["end"] * 1000
    assert [p for p, is_hit in hit["snippet"] if is_hit] == [word.text.strip(" .,")]
    # The other sentence is not a hit: "Верните мне деньги" is found by "деньгам", in its own segment.
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls?said=" + quote("деньгам"), "agent")
    item, = json.loads(body)["items"]
    money = next(u for u in LAYOUT["ru.wav"] if "деньги" in u["text"])
    assert money["start"] * 1000 - 700 <= item["hits"][0]["offset_ms"] <= money["end"] * 1000
