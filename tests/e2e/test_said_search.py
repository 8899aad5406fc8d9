"""Search by what was said (``said=``), talk filters, the transcript summary and the transcript read API,
on a real PostgreSQL with transcripts stored through ``save_transcript`` (synthetic, known word times)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from support import REPO
from support.opsapi import T0, Bench, audit_rows, call, insert_call

from callrec.access import cli_principal
from callrec.speech import Interval, Segment, Track, Transcript, Word, transcript_stats
from callrec.store import callquery
from callrec.store.transcripts import save_transcript

Line = tuple[str, int, str]  # speaker, start ms, text


def make_transcript(lines: list[Line], duration_ms: int = 60_000, stereo: bool = True) -> Transcript:
    """A transcript whose words are 300 ms apart (each 250 ms long) from each line's start; a track's voice
    is its segments' time."""
    speakers = ("caller", "agent") if stereo else ("mixed",)
    tracks = []
    for channel, speaker in enumerate(speakers):
        segments = []
        for who, start, text in lines:
            if who != speaker:
                continue
            words = tuple(Word(" " + w, start + 300 * i, start + 300 * i + 250, 0.9)
                          for i, w in enumerate(text.split()))
            segments.append(Segment(start, words[-1].end_ms, " " + text, words))
        tracks.append(Track(speaker, channel, tuple(segments),
                            tuple(Interval(s.start_ms, s.end_ms) for s in segments)))
    return Transcript(tuple(tracks), duration_ms, "ru", model="whisper-base@d01c3014")


def word_start(lines: list[Line], speaker: str, word: str) -> int:
    for who, start, text in lines:
        if who == speaker:
            for i, w in enumerate(text.split()):
                if w.strip(".,!?") == word:
                    return start + 300 * i
    raise AssertionError(word)


MINE: list[Line] = [
    ("caller", 1000, "Здравствуйте, я хочу вернуть деньги по договору."),
    ("agent", 4000, "Извините, это коммерческая тайна компании."),
    ("caller", 8000, "Then I want a refund, please."),
]
OTHER: list[Line] = [
    ("agent", 500, "Мы обсудим условия договора завтра."),
    ("caller", 3000, "Тайна вклада и коммерческий интерес."),
    ("agent", 6000, "Мы дадим вам скидку на тариф."),
]
SECRET: list[Line] = [
    ("agent", 700, "Это коммерческая тайна, никому о договоре."),
]


async def save(bench: Bench, call_id: str, lines: list[Line], duration_ms: int = 60_000,
               stereo: bool = True) -> None:
    t = make_transcript(lines, duration_ms, stereo)
    async with bench.pool.acquire() as conn:
        await save_transcript(conn, call_id, t.to_dict(), transcript_stats(t).to_dict(), recording_sha256="ab" * 32)


async def get(http: aiohttp.ClientSession, bench: Bench, path: str, role: str = "admin") -> tuple[int, Any]:
    st, body, _ = await call(http, bench, "GET", path, role)
    return st, json.loads(body)


async def said(http: aiohttp.ClientSession, bench: Bench, text: str, role: str = "admin",
               extra: str = "") -> dict[str, Any]:
    st, body = await get(http, bench, f"/api/v1/calls?said={quote(text)}{extra}", role)
    assert st == 200, body
    return {item["id"]: item for item in body["items"]}


@pytest.fixture
async def searchable(bench: Bench) -> Bench:
    c = bench.calls
    await save(bench, c["mine"], MINE)
    await save(bench, c["other"], OTHER)
    await save(bench, c["confidential"], SECRET)
    return bench


async def test_word_forms_phrases_hits(searchable: Bench, http: aiohttp.ClientSession) -> None:
    bench, c = searchable, searchable.calls
    # Another word form finds every call that said it (ru), each hit marked where the word was said.
    found = await said(http, bench, "договор")
    assert set(found) == {c["mine"], c["other"], c["confidential"]}
    hit, = found[c["mine"]]["hits"]
    assert hit["speaker"] == "caller" and hit["seq"] == 0
    assert hit["offset_ms"] == word_start(MINE, "caller", "договору")
    assert ["договору", True] in hit["snippet"] and "fuzzy" not in hit
    assert "".join(part for part, _ in hit["snippet"]) == "Здравствуйте, я хочу вернуть деньги по договору."
    assert found[c["other"]]["hits"][0]["speaker"] == "agent"
    assert found[c["other"]]["hits"][0]["offset_ms"] == word_start(OTHER, "agent", "договора")
    # English through the same configuration.
    found = await said(http, bench, "refunds")
    assert set(found) == {c["mine"]}
    hit, = found[c["mine"]]["hits"]
    assert hit["offset_ms"] == word_start(MINE, "caller", "refund") and ["refund", True] in hit["snippet"]
    assert hit["seq"] == 2 and hit["end_ms"] > hit["offset_ms"]

    # A quoted phrase: its words next to each other, in any form; unquoted words: each anywhere in the call.
    assert set(await said(http, bench, '"коммерческую тайну"')) == {c["mine"], c["confidential"]}
    assert set(await said(http, bench, "коммерческую тайну")) == {c["mine"], c["other"], c["confidential"]}
    found = await said(http, bench, "тайна деньги")  # two different segments of one call
    assert set(found) == {c["mine"]}
    hits = found[c["mine"]]["hits"]
    assert [h["seq"] for h in hits] == [0, 1]  # time order, one per matching segment
    assert hits[1]["offset_ms"] == word_start(MINE, "agent", "тайна")
    assert [p for p, is_hit in hits[1]["snippet"] if is_hit] == ["тайна"]
    assert set(await said(http, bench, '"тайна вклада" скидки')) == {c["other"]}
    assert await said(http, bench, '"тайна вклада" холодильник') == {}
    # Each in some call, but not both in one call: nothing, also from the similar-word fallback.
    assert await said(http, bench, '"тайна вклада" refund') == {}

    # Combined with the other filters, and the transcript summary on every item.
    assert set(await said(http, bench, "договор", extra="&agent=202")) == {c["other"]}
    assert set(await said(http, bench, "договор", extra="&to=2026-11-20T09:01:30Z")) == {c["mine"], c["other"]}
    item = (await said(http, bench, "тайна деньги"))[c["mine"]]
    assert item["transcript"]["state"] == "done" and item["transcript"]["talk_ms"] > 0
    st, body = await get(http, bench, "/api/v1/calls/count?said=" + quote("договор"))
    assert st == 200 and body["count"] == 3


async def test_trigram_fallback(searchable: Bench, http: aiohttp.ClientSession) -> None:
    bench, c = searchable, searchable.calls
    exact = await said(http, bench, "скидку")
    assert set(exact) == {c["other"]} and "fuzzy" not in exact[c["other"]]["hits"][0]
    # A misrecognised form (one letter off) matches nothing by full text: similar words are found, flagged.
    found = await said(http, bench, "скипку")
    assert set(found) == {c["other"]}
    hit, = found[c["other"]]["hits"]
    assert hit["fuzzy"] is True and hit["offset_ms"] == word_start(OTHER, "agent", "скидку")
    assert ["скидку", True] in hit["snippet"]
    # Nothing similar either: empty, not an error.
    assert await said(http, bench, "холодильник") == {}
    # The fallback keeps the visibility rule: the supervisor's fuzzy search sees no confidential call.
    assert await said(http, bench, "тайнна коммерческаа", role="supervisor") != {}
    assert c["confidential"] not in await said(http, bench, "тайнна коммерческаа", role="supervisor")


async def test_visibility_no_leak(searchable: Bench, http: aiohttp.ClientSession) -> None:
    bench, c = searchable, searchable.calls
    assert set(await said(http, bench, '"коммерческая тайна"', role="security")) == {c["mine"], c["confidential"]}
    # The supervisor does not see the confidential call: no item, no hit, and not in the count.
    assert set(await said(http, bench, '"коммерческая тайна"', role="supervisor")) == {c["mine"]}
    st, body = await get(http, bench, "/api/v1/calls/count?said=" + quote('"коммерческая тайна"'), "supervisor")
    assert body["count"] == 1
    # Said only on the hidden call: nothing at all (and no fuzzy guess from it either).
    assert await said(http, bench, "никому", role="supervisor") == {}
    # An agent finds only their own calls.
    assert set(await said(http, bench, "договор", role="agent")) == {c["mine"]}
    assert await said(http, bench, "скидку", role="agent") == {}
    st, _ = await get(http, bench, "/api/v1/calls?said=" + quote("договор"), "auditor")
    assert st == 403
    # Each search with said is audited with the calls whose snippets were shown, none hidden among them.
    entries = await audit_rows(bench, action="transcript_search", role="supervisor")
    assert [json.loads(e["details"]) for e in entries] == [
        {"said": '"коммерческая тайна"', "fuzzy": False, "calls": [c["mine"]]},
        {"said": "никому", "fuzzy": True, "calls": []}]


async def test_pagination(searchable: Bench, http: aiohttp.ClientSession) -> None:
    bench = searchable
    seen: list[str] = []
    path = "/api/v1/calls?limit=1&said=" + quote("договор")
    cursor = None
    for _ in range(5):
        st, body = await get(http, bench, path + (f"&cursor={cursor}" if cursor else ""))
        assert st == 200 and len(body["items"]) == 1
        assert body["items"][0]["hits"], body
        seen.append(body["items"][0]["id"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3 == len(set(seen))
    # The fallback pages on as a fallback.
    await save(bench, bench.calls["party"], [("agent", 100, "Скидку дадим потом.")])
    st, body = await get(http, bench, "/api/v1/calls?limit=1&said=" + quote("скипку"))
    assert body["items"][0]["hits"][0]["fuzzy"] and body["next_cursor"]
    st, body2 = await get(http, bench, "/api/v1/calls?limit=1&said=" + quote("скипку") + "&cursor="
                          + body["next_cursor"])
    assert st == 200 and body2["items"][0]["hits"][0]["fuzzy"] and body2["next_cursor"] is None
    assert body2["items"][0]["id"] != body["items"][0]["id"]
    # A fallback cursor without said is refused.
    st, body3 = await get(http, bench, "/api/v1/calls?limit=1&cursor=" + body["next_cursor"])
    assert st == 400 and body3["error"].startswith("cursor:")


@pytest.mark.parametrize("text, status", [
    ("a & b | !c <-> :*", 200), ("договор:*", 200), ("')(\\", 400), ("!!!", 400), ("<->", 400),
    ("не", 400), ("the", 400), ('"не и"', 400), ('"', 400), ("   ", 400), ("x" * 201, 400),
    (" ".join(f"w{i}" for i in range(9)), 400), ("%00", 400),
])
async def test_hostile_said(searchable: Bench, http: aiohttp.ClientSession, text: str, status: int) -> None:
    q = text if text == "%00" else quote(text)
    st, body = await get(http, searchable, f"/api/v1/calls?said={q}")
    assert st == status, body
    if status == 400:
        assert body["error"].startswith("said:")
    else:
        assert body["items"] == [] or all("hits" in i for i in body["items"])


async def test_talk_filters(searchable: Bench, http: aiohttp.ClientSession) -> None:
    bench, c = searchable, searchable.calls
    # mine: 60 s with a little talk (mostly silence); other: a short call, the agent talking most.
    await save(bench, c["other"], [("agent", 0, " ".join(["да"] * 30)), ("caller", 8000, "нет нет нет")],
               duration_ms=10_000)
    rows = {str(r["call_id"]): r for r in await bench.pool.fetch(
        "SELECT call_id, silence_share, agent_talk_ratio, overtalk_ms FROM transcripts")}
    mine, other = rows[c["mine"]], rows[c["other"]]
    assert mine["silence_share"] > 0.5 > other["silence_share"]
    assert other["agent_talk_ratio"] > 0.7 and other["overtalk_ms"] > 0 and mine["overtalk_ms"] == 0

    async def ids(query: str) -> set[str]:
        st, body = await get(http, bench, "/api/v1/calls?" + query)
        assert st == 200, body
        return {i["id"] for i in body["items"]}
    assert await ids("silence_over=50") == {c["mine"], c["confidential"]}
    assert await ids("silence_over=50&said=" + quote("договор")) == {c["mine"], c["confidential"]}
    assert await ids("agent_talk_over=70") == {c["other"], c["confidential"]}
    assert await ids("agent_talk_under=70") == {c["mine"]}
    assert await ids("overtalk_over=0.1") == {c["other"]}
    assert await ids("overtalk_over=0.1&said=" + quote("договор")) == set()
    for bad in ("silence_over=101", "silence_over=abc", "silence_over=nan", "agent_talk_under=-1",
                "agent_talk_over=1e400", "overtalk_over=90000", "silence_over=1&silence_over=2"):
        st, body = await get(http, bench, "/api/v1/calls?" + bad)
        assert st == 400 and body["error"].split(":")[0] == bad.split("=")[0], (bad, body)

    # The transcript summary: done with stats, the queue's state while waiting, none otherwise.
    await bench.pool.execute("INSERT INTO speech_jobs (call_id, state, progress) VALUES ($1::uuid, 'running', 0.4)",
                             c["party"])
    st, body = await get(http, bench, "/api/v1/calls?limit=500")
    summary = {i["id"]: i["transcript"] for i in body["items"]}
    assert summary[c["party"]] == {"state": "running", "progress": pytest.approx(0.4), "silence_share": None,
                                   "agent_talk_ratio": None, "overtalk_ms": None, "talk_ms": None}
    assert summary[c["unrecorded"]]["state"] == "none"
    assert summary[c["other"]]["state"] == "done"
    assert summary[c["other"]]["agent_talk_ratio"] == pytest.approx(other["agent_talk_ratio"], abs=1e-3)
    st, body = await get(http, bench, f"/api/v1/calls/{c['mine']}")
    assert body["transcript"]["state"] == "done"
    assert body["transcript"]["silence_share"] == pytest.approx(mine["silence_share"], abs=1e-3)


async def test_transcript_read(searchable: Bench, http: aiohttp.ClientSession) -> None:
    bench, c = searchable, searchable.calls
    st, body = await get(http, bench, f"/api/v1/calls/{c['mine']}/transcript", "supervisor")
    assert st == 200
    assert [s["speaker"] for s in body["segments"]] == ["caller", "agent", "caller"]
    assert body["segments"][2]["words"][4] == {"text": " refund,", "start_ms": 9200, "end_ms": 9450,
                                               "probability": 0.9}
    assert body["stereo"] is True and body["language"] == "ru" and body["call_id"] == c["mine"]
    assert set(body["talk"]) == {"talk_ms", "caller_talk_ms", "agent_talk_ms", "agent_talk_ratio", "overtalk_ms",
                                 "silence_ms", "silence_share", "longest_silence_ms"}
    assert body["talk"]["talk_ms"] > 0
    # One audit row per read, as the reader.
    await get(http, bench, f"/api/v1/calls/{c['mine']}/transcript", "supervisor")
    reads = await audit_rows(bench, action="transcript_read", call_id=c["mine"])
    assert len(reads) == 2 and {r["actor"] for r in reads} == {"supervisor1(token:supervisor-token)"}
    assert reads[0]["role"] == "supervisor"

    # The visibility rule: hidden is 404 without a word about the transcript; no audit row.
    st, body = await get(http, bench, f"/api/v1/calls/{c['confidential']}/transcript", "supervisor")
    assert st == 404 and "job" not in body
    st, body = await get(http, bench, f"/api/v1/calls/{c['other']}/transcript", "agent")
    assert st == 404 and "job" not in body
    st, _ = await get(http, bench, f"/api/v1/calls/{c['mine']}/transcript", "auditor")
    assert st == 403
    assert len(await audit_rows(bench, action="transcript_read")) == 2

    # No transcript: 404 with the job's state (or none).
    st, body = await get(http, bench, f"/api/v1/calls/{c['party']}/transcript")
    assert st == 404 and body["job"] == {"state": None, "progress": None}
    await bench.pool.execute("INSERT INTO speech_jobs (call_id, state, progress) VALUES ($1::uuid, 'running', 0.25)",
                             c["party"])
    st, body = await get(http, bench, f"/api/v1/calls/{c['party']}/transcript")
    assert st == 404 and body["job"] == {"state": "running", "progress": 0.25}
    assert "transcribed" in body["error"]
    st, body = await get(http, bench, f"/api/v1/calls/{c['party']}/transcript?x=1")
    assert st == 400
    assert len(await audit_rows(bench, action="transcript_read")) == 2


def cli(bench: Bench, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[asterisk]\nari_password = "a"\nami_password = "b"\n[database]\ndsn = "{bench.dsn}"\n'
                   f'[recordings]\ndir = "/var/spool/asterisk/callrec"\nlocal_dir = "{tmp_path}"\n')
    return subprocess.run([sys.executable, "-m", "callrec", "-c", str(cfg), *args], capture_output=True, text=True,
                          timeout=60)


async def test_cli_said_and_transcript(searchable: Bench, tmp_path: Path) -> None:
    bench, c = searchable, searchable.calls
    r = cli(bench, tmp_path, "calls", "--said", "коммерческая тайна")
    assert r.returncode == 0, r.stderr
    # Each call, then its hits: speaker, mm:ss and the words in brackets.
    assert "agent  00:04  Извините, это [коммерческая] [тайна] компании." in r.stdout
    assert c["mine"] in r.stdout and c["confidential"] in r.stdout
    r = cli(bench, tmp_path, "calls", "--said", "скипку")
    assert r.returncode == 0 and "agent  00:06~ Мы дадим вам [скидку] на тариф." in r.stdout, r.stdout
    r = cli(bench, tmp_path, "calls", "--said", "refunds", "--json")
    item, = [json.loads(line) for line in r.stdout.splitlines()]
    assert item["id"] == c["mine"] and item["hits"][0]["offset_ms"] == word_start(MINE, "caller", "refund")
    assert item["transcript"]["state"] == "done" and not any(k.startswith("tr_") for k in item)
    searches = await audit_rows(bench, action="transcript_search")
    assert len(searches) == 3 and all(json.loads(e["details"])["via"] == "cli" for e in searches)
    r = cli(bench, tmp_path, "calls", "--said", "не")
    assert r.returncode == 2 and r.stderr.startswith("callrec: said:"), r.stderr
    r = cli(bench, tmp_path, "calls", "--silence-over", "150")
    assert r.returncode == 2 and "silence_over" in r.stderr

    r = cli(bench, tmp_path, "transcript", c["mine"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1:] == ["00:01  caller  Здравствуйте, я хочу вернуть деньги по договору.",
                         "00:04  agent   Извините, это коммерческая тайна компании.",
                         "00:08  caller  Then I want a refund, please."]
    r = cli(bench, tmp_path, "transcript", c["mine"], "--json")
    assert json.loads(r.stdout)["segments"][1]["words"][2]["start_ms"] == 4600
    reads = await audit_rows(bench, action="transcript_read", call_id=c["mine"])
    assert len(reads) == 2 and all(e["actor"].startswith("cli:") for e in reads)
    assert json.loads(reads[0]["details"])["via"] == "cli"
    r = cli(bench, tmp_path, "transcript", c["party"])
    assert r.returncode == 1 and "has no transcript" in r.stderr
    r = cli(bench, tmp_path, "transcript", "not-a-call")
    assert r.returncode == 2


async def test_lexicon_follows_the_segments(searchable: Bench, http: aiohttp.ClientSession) -> None:
    """The similar-word fallback's word list (migration 013) is kept by triggers: a replaced or deleted
    transcript takes out the words only it had, so an erased call's words are not found even by similarity."""
    bench, c = searchable, searchable.calls

    async def count(word: str) -> int | None:
        return await bench.pool.fetchval("SELECT segments FROM transcript_lexicon WHERE word = $1", word)
    assert await count("никому") == 1 and await count("тайна") == 3 and await count("договору") == 1
    assert await count("refund") == 1  # lowercase, without its punctuation
    await save(bench, c["confidential"], [("agent", 100, "Здравствуйте, слушаю вас.")])  # replaced
    assert await count("никому") is None and await count("тайна") == 2 and await count("здравствуйте") == 2
    assert set(await said(http, bench, "никомо")) == set()
    await bench.pool.execute("DELETE FROM transcripts WHERE call_id = $1::uuid", c["mine"])  # cascades
    assert await count("тайна") == 1 and await count("здравствуйте") == 1 and await count("refund") is None
    assert set(await said(http, bench, "тайнна")) == {c["other"]}
    assert await said(http, bench, "refundd") == {}
    await bench.pool.execute("DELETE FROM calls WHERE id = $1::uuid", c["confidential"])
    assert await count("здравствуйте") is None
    left = {r["word"] for r in await bench.pool.fetch("SELECT word FROM transcript_lexicon")}
    assert left == {w.strip(".,").lower() for _, _, text in OTHER for w in text.split()}
    await bench.pool.execute("TRUNCATE transcripts CASCADE")
    assert await bench.pool.fetchval("SELECT count(*) FROM transcript_lexicon") == 0


async def test_app_role_keeps_the_lexicon(database: str, conn: asyncpg.Connection) -> None:
    """docs/sql/app_role.sql is enough to save, replace and delete a transcript (the lexicon's triggers run
    with the saver's rights) and to search with the fallback."""
    role = f"callrec_app_{uuid.uuid4().hex[:8]}"
    sql = (REPO / "docs/sql/app_role.sql").read_text()
    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        for line in sql.splitlines():
            if line.strip() and not line.startswith("--"):
                await conn.execute(line.replace(':"app"', f'"{role}"'))
        parts = urlsplit(database)
        app = await asyncpg.connect(urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}")))
        try:
            call_id = await insert_call(app, None, started=T0, agent="201")
            t = make_transcript(OTHER)
            await save_transcript(app, call_id, t.to_dict(), transcript_stats(t).to_dict(), recording_sha256="ab" * 32)
            await save_transcript(app, call_id, t.to_dict(), transcript_stats(t).to_dict(), recording_sha256="ab" * 32)
            f = callquery.parse_filter(lambda k: ["скипку"] if k == "said" else [])
            rows, _ = await callquery.search(app, f, cli_principal())
            assert [str(r["id"]) for r in rows] == [call_id] and f.fuzzy
            await app.execute("DELETE FROM transcripts WHERE call_id = $1::uuid", call_id)
            assert await app.fetchval("SELECT count(*) FROM transcript_lexicon") == 0
        finally:
            await app.close()
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
