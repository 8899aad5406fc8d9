#!/usr/bin/env python3
"""Search benchmark: ``said=`` over 1,000,000 transcript segments (about 20,000 calls), p50/p95 per kind of
query, beside the plain call list in the same run.  Not a timed test: it prints the figures for
docs/benchmarks.md (target: p95 <= 100 ms).

    .venv/bin/python benchmarks/search_bench.py [--segments 1000000] [--runs 40] [--keep DB] [--json]

It makes a throwaway database (tools/testdb.py finds PostgreSQL), fills ``calls``, ``transcripts`` and
``transcript_segments`` with generated dialogue (Russian and English words drawn by a Zipf law from a real
vocabulary and a long tail of rarer words; a rare word and a phrase planted in known segments), then times
the real search function (``callquery.search`` + ``page_hits``, as the API runs them, for a supervisor:
the visibility rule included) and the same queries through the HTTP API in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
from benchkit import api_server, bench_database

from callrec.access import Principal
from callrec.store import callquery, migrate, users

RU = """здравствуйте добрый день да нет спасибо пожалуйста хорошо я вы мы он она это что как где когда
почему можно нужно надо сейчас потом уже ещё только очень просто вот так тоже если чтобы или но а и в на с по
к у о за из от до для при без через договор договора договору договором договоре условия оплата оплату оплаты
счёт счета счету карта карту карты деньги денег возврат возврата вернуть заказ заказа заказу доставка доставку
доставки номер номера телефон телефона адрес адреса клиент клиента менеджер менеджера оператор оператора
вопрос вопросы проблема проблему ситуация ситуацию решение решить помочь помогу подскажите скажите уточните
понимаю понятно конечно минуту секунду подождите соединяю перезвоню перезвоните тариф тарифа тарифу услуга
услуги услугу подключить отключить подключение интернет связь скидку скидка скидки акция акции бонус бонусы
претензия претензию жалоба жалобу отзыв сотрудник сотрудника компания компании офис офиса сегодня завтра вчера
неделю месяц месяца год года рублей рубля тысяч сумма сумму платёж платежа списание списали банк банка
документы документ паспорт подпись подписать согласие запись разговора информация информацию данные""".split()
EN = """hello hi good morning afternoon yes no thanks thank you please okay sure right well so and or but the a to
of in on for with at from by about order orders delivery account accounts payment payments refund refunds card
cards bank charge charged invoice invoices contract contracts price prices discount discounts plan plans
service services support manager customer customers problem issue issues question questions help number phone
address email today tomorrow week month year dollars euros cancel cancelled subscription renewal upgrade
please hold moment transfer call back confirm confirmed details information name date time""".split()
RARE = "холодильник"
PHRASES = [["коммерческая", "тайна"], ["коммерческую", "тайну"], ["коммерческой", "тайны"]]
SYLLABLES = "ба ве ги до ку ли ма не ор пу ра се ти ус фа хо ца че ша эк юн яр".split()


def tail_words(n: int, rng: random.Random) -> list[str]:
    """Rarer words: made of Russian syllables, so the index holds a realistic number of distinct lexemes."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(3, 5))))
    return sorted(out)


def zipf_cum(n: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank
        out.append(total)
    return out


def generate(segments: int, per_call: int, seed: int = 9) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                                     list[tuple[Any, ...]], dict[str, int]]:
    rng = random.Random(seed)
    tail = tail_words(20_000, rng)
    vocab = {"ru": RU + tail, "en": EN + tail[:2000]}
    cum = {k: zipf_cum(len(v)) for k, v in vocab.items()}
    calls, transcripts, segs = [], [], []
    planted = {"rare": 0, "phrase": 0}
    n_calls = segments // per_call
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for c in range(n_calls):
        call_id = uuid.uuid4()
        lang = "en" if c % 5 == 0 else "ru"
        started = t0 + timedelta(minutes=20 * c)
        seconds = per_call * 4 + 10
        calls.append((call_id, "ari", f"u{c}", f"PJSIP/t-{c}", f"+4930{1000000 + c}", f"Caller {c}", "100", "notice",
                      "ended", "implied", started, started + timedelta(seconds=seconds), "ready", float(seconds),
                      str(200 + c % 50), c % 50 == 0))
        silence = rng.uniform(0.05, 0.6)
        agent_ratio = rng.uniform(0.2, 0.8)
        talk = int(seconds * 1000 * (1 - silence))
        transcripts.append((call_id, "ab" * 32, "whisper-base@bench", lang, seconds * 1000, True, talk,
                            int(talk * (1 - agent_ratio)), int(talk * agent_ratio), agent_ratio,
                            rng.randint(0, 8000), int(seconds * 1000 * silence), silence))
        at = 500
        for seq in range(per_call):
            n = rng.randint(6, 16)
            words = rng.choices(vocab[lang], cum_weights=cum[lang], k=n)
            if rng.random() < 0.002 and lang == "ru":
                i = rng.randrange(0, n - 1)
                words[i:i + 2] = rng.choice(PHRASES)
                planted["phrase"] += 1
            if rng.random() < 0.00003:
                words[rng.randrange(n)] = RARE
                planted["rare"] += 1
            ws = []
            t = at
            for w in words:
                ws.append([" " + w, t, t + 250, 0.9])
                t += 300
            speaker = "caller" if seq % 2 == 0 else "agent"
            segs.append((call_id, seq, speaker, at, t, "".join(w[0] for w in ws),
                         json.dumps(ws, ensure_ascii=False)))
            at = t + 400
    return calls, transcripts, segs, planted


async def fill(conn: asyncpg.Connection, segments: int, per_call: int) -> dict[str, int]:
    calls, transcripts, segs, planted = generate(segments, per_call)
    await conn.copy_records_to_table("calls", records=calls, columns=[
        "id", "door", "uniqueid", "channel", "caller_number", "caller_name", "called_number", "consent_mode",
        "state", "consent", "started_at", "ended_at", "recording_status", "recording_duration", "agent",
        "confidential"])
    await conn.copy_records_to_table("transcripts", records=transcripts, columns=[
        "call_id", "recording_sha256", "model", "language", "duration_ms", "stereo", "talk_ms", "caller_talk_ms",
        "agent_talk_ms", "agent_talk_ratio", "overtalk_ms", "silence_ms", "silence_share"])
    # The indexes are built after the load (faster than row by row), as a restore would.
    await conn.execute("DROP INDEX transcript_segments_tsv_idx; DROP INDEX transcript_segments_trgm_idx")
    for i in range(0, len(segs), 100_000):
        await conn.copy_records_to_table("transcript_segments", records=segs[i:i + 100_000], columns=[
            "call_id", "seq", "speaker", "start_ms", "end_ms", "text", "words"])
    await conn.execute("SET maintenance_work_mem = '256MB'")
    await conn.execute("CREATE INDEX transcript_segments_tsv_idx ON transcript_segments USING gin (tsv)")
    await conn.execute("CREATE INDEX transcript_segments_trgm_idx ON transcript_segments USING gin (text gin_trgm_ops)")
    await conn.execute("VACUUM ANALYZE calls")
    await conn.execute("VACUUM ANALYZE transcripts")
    await conn.execute("VACUUM ANALYZE transcript_segments")
    return {"calls": len(calls), "segments": len(segs), "words": sum(s[6].count("[\" ") for s in segs), **planted}


# name -> query string of the call list (the API's parameters)
QUERIES = {
    "baseline: the list, no said": "",
    "common word (договор, any form)": "said=" + quote("договоры"),
    "common English word (refunds)": "said=" + quote("refunds"),
    "rare word (холодильник)": "said=" + quote("холодильники"),
    "phrase (\"коммерческая тайна\")": "said=" + quote('"коммерческую тайну"'),
    "two words, anywhere in the call": "said=" + quote("возврат паспорт"),
    "said + agent + time range": "said=" + quote("договор") + "&agent=211&from=2026-02-01T00:00:00Z",
    "said + talk filter": "said=" + quote("скидку") + "&silence_over=40",
    "said + agent, nothing matches (+ fallback)": "said=" + quote("договор") + "&agent=210",
    "trigram fallback (скипку ~ скидку)": "said=" + quote("скипку"),
}


async def time_save(pool: asyncpg.Pool, runs: int) -> list[float]:
    """save_transcript of one 50-segment call (about 550 words), replaced ``runs`` times: what the transcription
    queue pays per call, the lexicon's triggers included."""
    from callrec.speech import Interval, Segment, Track, Transcript, Word, transcript_stats
    from callrec.store.transcripts import save_transcript

    rng = random.Random(3)
    tail = tail_words(20_000, rng)
    vocab, cum = RU + tail, zipf_cum(len(RU) + len(tail))
    tracks = []
    for channel, speaker in enumerate(("caller", "agent")):
        segments = []
        for k in range(25):
            start = (2 * k + channel) * 4000
            words = tuple(Word(" " + w, start + 300 * i, start + 300 * i + 250, 0.9)
                          for i, w in enumerate(rng.choices(vocab, cum_weights=cum, k=11)))
            segments.append(Segment(start, words[-1].end_ms, "".join(w.text for w in words), words))
        tracks.append(Track(speaker, channel, tuple(segments), tuple(Interval(s.start_ms, s.end_ms)
                                                                     for s in segments)))
    t = Transcript(tuple(tracks), 210_000, "ru", model="whisper-base@bench")
    data, stats = t.to_dict(), transcript_stats(t).to_dict()
    async with pool.acquire() as conn:
        call_id = await conn.fetchval("SELECT id::text FROM calls ORDER BY started_at LIMIT 1")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            await save_transcript(conn, call_id, data, stats, recording_sha256="ab" * 32)
            times.append((time.perf_counter() - t0) * 1000)
    return times


def _get(query: str) -> Any:
    from urllib.parse import parse_qs

    parsed = parse_qs(query, keep_blank_values=True)
    return lambda key: parsed.get(key, [])


async def time_function(pool: asyncpg.Pool, query: str, runs: int) -> tuple[list[float], dict[str, Any]]:
    sup = Principal(name="bench", role="supervisor")
    times = []
    info: dict[str, Any] = {}
    for _ in range(runs):
        f = callquery.parse_filter(_get(query))
        t0 = time.perf_counter()
        rows, cursor = await callquery.search(pool, f, sup)
        hits = await callquery.page_hits(pool, f, rows)
        times.append((time.perf_counter() - t0) * 1000)
        info = {"items": len(rows), "more": cursor is not None, "fuzzy": f.fuzzy,
                "hits": sum(len(v) for v in (hits or {}).values())}
    return times, info


async def time_http(http: aiohttp.ClientSession, base: str, token: str, query: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        async with http.get(f"{base}/api/v1/calls?{query}", headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.read()
            assert r.status == 200, body[:200]
        times.append((time.perf_counter() - t0) * 1000)
    return times


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--per-call", type=int, default=50, help="segments per call (default 50: 20,000 calls)")
    ap.add_argument("--runs", type=int, default=40, help="timed runs per query (after 3 warm-up runs)")
    ap.add_argument("--keep", metavar="DB", help="use (or fill and keep) this database instead of a throwaway one")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    async with bench_database(args.keep, drop=not args.keep) as db:
        dsn = db.dsn
        conn = await asyncpg.connect(dsn)
        try:
            if await migrate(conn):
                await conn.execute("ANALYZE")  # a migration may have filled a table (the lexicon)
            if not await conn.fetchval("SELECT count(*) FROM transcript_segments"):
                t0 = time.perf_counter()
                results["data"] = await fill(conn, args.segments, args.per_call)
                results["fill_seconds"] = round(time.perf_counter() - t0, 1)
            else:
                results["data"] = {"calls": await conn.fetchval("SELECT count(*) FROM calls"),
                                   "segments": await conn.fetchval("SELECT count(*) FROM transcript_segments")}
            if not await conn.fetchval("SELECT 1 FROM users WHERE name = 'sup'"):
                await users.add_user(conn, "sup", "supervisor", None)
            _, token = await users.create_token(conn, f"bench-{uuid.uuid4().hex[:6]}", user="sup")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            async with api_server(dsn) as base, aiohttp.ClientSession() as http:
                for label, query in QUERIES.items():
                    await time_function(pool, query, 3)  # warm-up: caches, plans
                    fn, info = await time_function(pool, query, args.runs)
                    await time_http(http, base, token, query, 2)
                    ht = await time_http(http, base, token, query, args.runs)
                    results[label] = {"query": query, **info, "function_p50_ms": pct(fn, 50),
                                      "function_p95_ms": pct(fn, 95), "http_p50_ms": pct(ht, 50),
                                      "http_p95_ms": pct(ht, 95), "mean_ms": round(statistics.mean(fn), 1)}
            save = await time_save(pool, args.runs)
            results["save_transcript (50 segments, replacing)"] = {"p50_ms": pct(save, 50),
                                                                   "p95_ms": pct(save, 95)}
        finally:
            await pool.close()
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
        return 0
    filled = f"; filled in {results['fill_seconds']} s" if "fill_seconds" in results else ""
    print(f"data: {results['data']}{filled}")
    print(f"{'query (a supervisor, 50 per page)':42} {'items':>5} {'hits':>5}  {'function p50/p95 ms':>20}  "
          f"{'HTTP p50/p95 ms':>16}")
    for label in QUERIES:
        r = results[label]
        flag = " fuzzy" if r["fuzzy"] else ""
        print(f"{label:42} {r['items']:>5} {r['hits']:>5}  {r['function_p50_ms']:>9} / {r['function_p95_ms']:<8}  "
              f"{r['http_p50_ms']:>7} / {r['http_p95_ms']:<7}{flag}")
    save = results["save_transcript (50 segments, replacing)"]
    print(f"save_transcript of a 50-segment call (lexicon triggers included): p50 {save['p50_ms']} ms, "
          f"p95 {save['p95_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
