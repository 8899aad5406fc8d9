#!/usr/bin/env python3
"""Call-search benchmark: every filter of the API over a generated call log (default 10,000,000 calls),
p50/p95 per filter through the HTTP API, as a supervisor and as an agent (the visibility rule included),
and EXPLAIN ANALYZE of the slowest.  Not a timed test: it prints the figures for docs/benchmarks.md
(target: p95 <= 50 ms each).

    .venv/bin/python benchmarks/search_bench.py [--calls 10000000] [--runs 20] [--keep] [--json]

It makes a throwaway database (tools/testdb.py finds PostgreSQL), applies every migration, takes the
secondary indexes of ``calls`` and ``call_parties`` off, fills a year of calls in SQL on the server
(``INSERT ... SELECT`` over ``generate_series``: ~2,000 agents, 50 DIDs, +7 callers who call again, national and
international written forms, 2 % confidential, tags on 5 %, two parties per call), then builds the indexes
again the way the migrations do (``CREATE INDEX CONCURRENTLY``), timing each: that is what a migration adding
them costs on a filled database.  The API runs in this process, as `callrec serve` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
from benchkit import REPO, api_server, bench_database

from callrec.access import Principal
from callrec.store import callquery, migrate, users
from callrec.store.migrate import split_statements

AGENTS = 2000
SURNAMES = ("Ivanov Smirnov Kuznetsov Popov Vasiliev Petrov Sokolov Mikhailov Novikov Fedorov Morozov Volkov "
            "Alekseev Lebedev Semenov Egorov Pavlov Kozlov Stepanov Nikolaev Orlov Andreev Makarov Nikitin "
            "Zakharov Zaitsev Soloviev Borisov Yakovlev Grigoriev Romanov Vorobiev Sergeev Kuzmin Frolov "
            "Alexandrov Dmitriev Korolev Gusev Kiselev Ilyin Maksimov Polyakov Sorokin Vinogradov Kovalev Belov "
            "Medvedev Antonov Tarasov Zhukov Baranov Filippov Komarov Davydov Belyaev Gerasimov Bogdanov Osipov "
            "Sidorov Matveev Titov Markov Mironov Krylov Kulikov Karpov Vlasov Melnikov Denisov Gavrilov Tikhonov "
            "Kazakov Afanasiev Danilov Savelyev Timofeev Fomin Chernov Abramov Martynov Efimov Fedotov Shcherbakov "
            "Nazarov Kalinin Isaev Chernyshev Bykov Maslov Rodionov Konovalov Lazarev Voronin Klimov Filatov "
            "Ponomarev Golubev Kudryavtsev Prokhorov Naumov Potapov Zhuravlev Ovchinnikov Trofimov Leonov Sobolev "
            "Ermakov Kolesnikov Goncharov Emelyanov Nikiforov Grachev Kotov Grishin Efremov Arkhipov Gromov "
            "Kirillov Malyshev Panov Moiseev Rumyantsev Akimov Kondratiev Biryukov Gorbunov Anisimov Eremin "
            "Tikhomirov Galkin Lukyanov Mikheev Skvortsov Yudin Belousov Nesterov Simonov Prokofiev Kharitonov "
            "Knyazev Tsvetkov Levin Mitrofanov Voronov Aksenov Sofronov Maltsev Loginov Gorshkov Savin Krasnov "
            "Mayorov Demidov Eliseev Rybakov Safonov Plotnikov Demin Khokhlov Fadeev Molchanov Ignatov Litvinov "
            "Ershov Ushakov Dementiev Ryabov Mukhin Kalashnikov Leontiev Lobanov Kuzin Korneev Evdokimov Borodin "
            "Platonov Nekrasov Balashov Bobrov Zhdanov Blinov Ignatiev Korotkov Muravyov Kryukov Belyakov "
            "Bogomolov Drozdov Lavrov Zuev Petukhov Larin Nikulin Serov Terentiev Zotov Ustinov Fokin Samoylov "
            "Konstantinov Sakharov Shishkin Samsonov Cherkasov Chistyakov Nosov Spiridonov Karasev Avdeev Vorontsov "
            "Zverev Vladimirov Seleznev Nechaev Kudryashov Sedov Firsov Andrianov Panin Golovin Terekhov Ulyanov "
            "Shestakov Ageev Nikonov Selivanov Bazhenov Gordeev Kozhevnikov Pakhomov Zimin Kostin Shirokov "
            "Filimonov Larionov Ovsyannikov Sazonov Suvorov Nefedov Kornilov Lyubimov Lvov Gorbachev Kopylov "
            "Lukin Tokarev Kuleshov Shilov Bolshakov Pankratov Rodin Shapovalov Pokrovsky Bocharov Nikolsky Markin "
            "Gorelov Agafonov Berezin Ermolaev Zubkov Kupriyanov Trifonov Maslennikov Kruglov Tretyakov Kolosov "
            "Rozhkov Artamonov Shmelev Laptev Lapshin Fedoseev Zinoviev Zorin Utkin Stolyarov Zubov Tkachev "
            "Dorofeev Antipov Zavyalov Sviridov Zolotarev Kulakov Meshcheryakov Makeev Dyakonov Guryev "
            "Shchukin").split()
FIRST = ("Anna Maria Elena Olga Natalia Irina Tatiana Svetlana Alexei Dmitry Sergei Andrei Ivan Mikhail Pavel "
         "Oleg").split()
TAGS = ("complaint", "vip", "callback", "sale", "escalated", "fraud-check", "billing", "retention", "qa", "training")
YEAR_START = "2025-12-01T00:00:00Z"
YEAR_S = 365 * 86400


def _sql_array(values: tuple[str, ...] | list[str]) -> str:
    return "ARRAY[" + ",".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


async def fill(conn: asyncpg.Connection, calls: int, step: int = 500_000, dsn: str | None = None,
               jobs: int = 1) -> float:
    """Generated calls, in batches of ``step`` rows (one statement each, so progress shows); seconds taken.
    ``jobs`` > 1: that many connections to ``dsn`` take batches in turn (each batch is the same statement over
    its own range of ``i``, so the data are the same; only the order of the rows on disk differs)."""
    t0 = time.perf_counter()
    batches = [(lo, min(calls, lo + step) - 1) for lo in range(0, calls, step)]
    done = 0

    async def worker(c: asyncpg.Connection) -> None:
        nonlocal done
        while batches:
            lo, hi = batches.pop(0)
            await fill_batch(c, calls, lo, hi)
            done += hi - lo + 1
            print(f"  filled {done:,} calls, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    extra = [await asyncpg.connect(dsn) for _ in range(jobs - 1)] if dsn and jobs > 1 else []
    try:
        await asyncio.gather(worker(conn), *(worker(c) for c in extra))
    finally:
        for c in extra:
            await c.close()
    await conn.execute(f"""
        INSERT INTO call_tags (call_id, tag, created_by)
        SELECT id, ({_sql_array(TAGS)})[1 + abs(hashtext(id::text)) % {len(TAGS)}], 'bench'
          FROM calls WHERE abs(hashtext(id::text || 'tag')) % 20 = 0""")
    await conn.execute(RARE_TAG_SQL)
    return time.perf_counter() - t0


# A rare tag, on 1 call in 100,000 (100 at 10 million).
RARE_TAG = "legal-review"
RARE_TAG_SQL = (f"INSERT INTO call_tags (call_id, tag, created_by) SELECT id, '{RARE_TAG}', 'bench' FROM calls "
                "WHERE abs(hashtext(id::text || 'rare')) % 100000 = 0 ON CONFLICT DO NOTHING")


async def fill_batch(conn: asyncpg.Connection, calls: int, lo: int, hi: int) -> None:
    """Calls ``lo``..``hi`` (inclusive) of ``calls``, with their two parties."""
    surnames, first = _sql_array(SURNAMES), _sql_array(FIRST)
    # n: the caller (3 million distinct numbers, some calling often); inbound 80 %; the agent 1000-2999.
    await conn.execute(f"""
        WITH ins AS (
        INSERT INTO calls (id, door, uniqueid, channel, caller_number, caller_digits, caller_name, called_number,
                           called_digits, direction, consent_mode, state, consent, started_at, ended_at,
                           finalized_at, recording_status, recording_duration, agent, confidential)
        SELECT id, 'ari', 'u' || i, 'PJSIP/trunk-' || i,
               CASE WHEN inbound THEN (CASE WHEN i % 10 < 7 THEN '+' ELSE '8' END)
                                      || CASE WHEN i % 10 < 7 THEN ext_num ELSE substr(ext_num, 2) END
                    ELSE agent END,
               CASE WHEN inbound THEN ext_num ELSE agent END,
               CASE WHEN inbound AND i % 3 <> 0
                    THEN ({first})[1 + (n % 16)] || ' ' || ({surnames})[1 + (n / 16) % {len(SURNAMES)}] END,
               CASE WHEN inbound THEN '+7495123' || lpad((100 + d)::text, 4, '0') ELSE '+' || ext_num END,
               CASE WHEN inbound THEN '7495123' || lpad((100 + d)::text, 4, '0') ELSE ext_num END,
               CASE WHEN inbound THEN 'inbound' ELSE 'outbound' END, 'notice', 'ended',
               (ARRAY['implied','implied','implied','implied','implied','implied','granted','declined',
                      'abandoned','not_given'])[1 + k],
               started, started + make_interval(secs => 20 + (i::bigint * 7919) % 600),
               started + make_interval(secs => 21 + (i::bigint * 7919) % 600),
               CASE WHEN k = 7 THEN 'none' ELSE 'ready' END, ((i::bigint * 7919) % 600)::float8, agent,
               random() < 0.02
          FROM (SELECT i, gen_random_uuid() AS id, random() < 0.8 AS inbound,
                       -- k: consent and recording; d: the DID; random, not derived from i, so that they do
                       -- not go with the agent (which is)
                       floor(random() * 10)::int AS k, floor(random() * 50)::int AS d,
                       (1000 + (i::bigint * 48271) % {AGENTS})::text AS agent,
                       timestamptz '{YEAR_START}' + make_interval(secs => (i::float8 * {YEAR_S} / $1)) AS started,
                       n, '79' || lpad(((n::bigint * 99991) % 1000000000)::text, 9, '0') AS ext_num
                  FROM (SELECT i, (floor(power(random(), 2) * 3000000))::int AS n
                          FROM generate_series($2::int, $3::int) AS i) AS g) AS s
        RETURNING id, caller_number, caller_name, agent, started_at, ended_at)
        INSERT INTO call_parties (call_id, seq, number, name, channel, role, joined_at, left_at)
        SELECT c.id, p.seq, CASE p.seq WHEN 0 THEN c.caller_number ELSE c.agent END,
               CASE p.seq WHEN 0 THEN c.caller_name ELSE 'Agent ' || c.agent END, '',
               CASE p.seq WHEN 0 THEN 'caller' ELSE 'agent' END, c.started_at, c.ended_at
          FROM ins c CROSS JOIN (VALUES (0), (1)) AS p(seq)""", calls, lo, hi)


# The tables the fill writes (their triggers are off meanwhile: call_search and call_tags.started_at are then
# filled as migration 023 fills them on a database that had calls before it).
FILLED = ("calls", "call_parties", "call_tags")


def backfill_023() -> list[str]:
    """Migration 023's backfill statements (its DO blocks), each to run by itself (they commit in batches)."""
    text = (REPO / "callrec" / "store" / "migrations" / "023_search_order.sql").read_text(encoding="utf-8")
    return [st for st in split_statements(text) if "\nDO $$" in "\n" + st]


async def drop_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Take the secondary indexes of the filled tables off (kept: primary keys); their definitions."""
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i JOIN pg_index x ON x.indexrelid = i.indexname::regclass "
        "WHERE i.tablename IN ('calls', 'call_parties', 'call_tags', 'call_search') AND NOT x.indisprimary "
        "ORDER BY i.indexname")
    for r in rows:
        await conn.execute(f"DROP INDEX {r['indexname']}")
    return [(r["indexname"], r["indexdef"]) for r in rows]


async def build_indexes(conn: asyncpg.Connection, defs: list[tuple[str, str]]) -> dict[str, float]:
    times = {}
    for name, definition in defs:
        t0 = time.perf_counter()
        await conn.execute(definition.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1)
                           .replace("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX CONCURRENTLY ", 1))
        times[name] = round(time.perf_counter() - t0, 1)
        print(f"  index {name}: {times[name]} s", file=sys.stderr, flush=True)
    return times


async def samples(conn: asyncpg.Connection, rng: random.Random) -> dict[str, list[str]]:
    """Values that exist in the filled data, to search for (a few of each, so no one value is cached)."""
    rows = await conn.fetch("SELECT caller_number, caller_digits, agent, started_at FROM calls "
                            "TABLESAMPLE SYSTEM (1) WHERE direction = 'inbound' AND NOT confidential LIMIT 400")
    rows = list(rows)
    rng.shuffle(rows)
    out: dict[str, list[str]] = {"number": [], "national": [], "tail": [], "prefix": [], "suffix": [],
                                 "agent": [], "month": [], "day": []}
    for r in rows[:20]:
        d = r["caller_digits"]
        out["number"].append(f"+{d[0]} {d[1:4]} {d[4:7]}-{d[7:9]}-{d[9:]}")
        out["national"].append("8" + d[1:])
        out["tail"].append(d[-7:])
        out["prefix"].append(f"+{d[:9]}*")
        out["suffix"].append(f"*{d[-7:]}")
        out["agent"].append(r["agent"])
        month = r["started_at"].replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        out["month"].append(month.isoformat())
        out["day"].append(r["started_at"].replace(hour=0, minute=0, second=0, microsecond=0).isoformat())
    return out


def queries(s: dict[str, list[str]]) -> list[tuple[str, list[dict[str, str]]]]:
    """(filter name, the query strings to cycle through)."""
    def each(key: str, make: Any) -> list[dict[str, str]]:
        return [make(v) for v in s[key]]

    def month_of(v: str) -> dict[str, str]:
        start = v.replace("+00:00", "Z")
        y, m = int(start[:4]), int(start[5:7])
        end = f"{y + (m == 12):04d}-{m % 12 + 1:02d}-01T00:00:00Z"
        return {"from": start, "to": end}

    def day_of(v: str) -> dict[str, str]:
        from datetime import datetime, timedelta
        d = datetime.fromisoformat(v)
        return {"from": d.isoformat(), "to": (d + timedelta(days=1)).isoformat()}

    agent_month = [{"agent": a, **month_of(m)} for a, m in zip(s["agent"], s["month"], strict=False)]
    return [
        ("newest 50", [{}]),
        ("number exact +7 916 ...", each("number", lambda v: {"number": v})),
        ("number national 8916...", each("national", lambda v: {"number": v})),
        ("number tail 7 digits", each("tail", lambda v: {"number": v})),
        ("number prefix +791612345*", each("prefix", lambda v: {"number": v})),
        ("number suffix *7392855", each("suffix", lambda v: {"number": v})),
        ("number wide prefix +7916*", [{"number": "+7916*"}, {"number": "+7903*"}, {"number": "8926*"}]),
        ("number DID +74951230101", [{"number": "+74951230101"}, {"number": "+74951230120"}]),
        ("q= surname", [{"q": "Petrov"}, {"q": "Smirnov"}, {"q": "Kozlova"}, {"q": "Olga Vo"}]),
        ("q= full name (rare)", [{"q": "Oleg Shchukin"}, {"q": "Anna Zverev"}, {"q": "ivan makeev"}]),
        ("q= no match", [{"q": "Zzyzx"}, {"q": "Qwertyuiop"}]),
        ("agent", each("agent", lambda v: {"agent": v})),
        ("agent in a month", agent_month),
        ("tag", [{"tag": t} for t in TAGS[:5]]),
        ("tag, rare (1 call in 100,000)", [{"tag": RARE_TAG}]),
        ("tag + agent", [{"tag": "vip", "agent": a} for a in s["agent"][:5]]),
        ("consent declined", [{"consent": "declined"}]),
        ("consent declined in a day", [{"consent": "declined", **day_of(v)} for v in s["day"]]),
        ("a day", [day_of(v) for v in s["day"]]),
        ("a month, oldest first", [{**month_of(v), "order": "asc"} for v in s["month"]]),
        ("recorded=false, long calls", [{"recorded": "false", "min_duration": "300"}]),
    ]


COUNTS = [("count: all", [{}]), ("count: a day", None), ("count: number", None), ("count: consent declined",
          [{"consent": "declined"}]), ("count: q= surname", [{"q": "Petrov"}]),
          ("count: q= full name (rare)", [{"q": "Oleg Shchukin"}]), ("count: tag", [{"tag": "vip"}]),
          ("count: tag, rare", [{"tag": RARE_TAG}])]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def timed(http: aiohttp.ClientSession, url: str, token: str, params: dict[str, str]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    async with http.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.read()
        assert r.status == 200, (url, params, body[:300])
    return (time.perf_counter() - t0) * 1000, json.loads(body)


async def run_filter(http: aiohttp.ClientSession, url: str, token: str, variants: list[dict[str, str]],
                     runs: int) -> tuple[list[float], int]:
    ms: list[float] = []
    found = 0
    await timed(http, url, token, variants[0])  # one warm-up
    for i in range(runs):
        t, body = await timed(http, url, token, variants[i % len(variants)])
        ms.append(t)
        found += len(body.get("items", [])) if "items" in body else 0
    return ms, found


async def deep_paging(http: aiohttp.ClientSession, base: str, token: str, runs: int,
                      start: str) -> list[float]:
    """Keyset pages deep in the log: each run starts at a cursor months back and reads the next page."""
    ms: list[float] = []
    cursor = callquery.encode_cursor(__import__("datetime").datetime.fromisoformat(start), uuid.UUID(int=0), "desc")
    for _ in range(runs):
        t, body = await timed(http, base + "/api/v1/calls", token, {"cursor": cursor, "limit": "50"})
        ms.append(t)
        cursor = body["next_cursor"] or cursor
    return ms


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=20, help="timed requests per filter and principal")
    ap.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    ap.add_argument("--db", help="use this existing filled database (from --keep) instead of filling one")
    ap.add_argument("--jobs", type=int, default=1, help="connections filling batches at once")
    ap.add_argument("--fill-only", action="store_true",
                    help="fill, build the indexes and stop (implies --keep; measure later with --db)")
    ap.add_argument("--json", action="store_true", help="print a list of {name, p50_ms, p95_ms}")
    args = ap.parse_args()
    rng = random.Random(11)
    info: dict[str, Any] = {"calls": args.calls}
    results: list[dict[str, Any]] = []
    async with bench_database(args.db, drop=not (args.keep or args.db or args.fill_only),
                              must_exist=bool(args.db)) as db:
        name, dsn = db.name, db.dsn
        conn = await asyncpg.connect(dsn)
        try:
            if not args.db:
                await migrate(conn)
                defs = await drop_indexes(conn)
                for table in FILLED:
                    await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                info["fill_s"] = round(await fill(conn, args.calls, dsn=dsn, jobs=args.jobs), 1)
                for table in FILLED:
                    await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
                # What migration 023 adds to a filled log, as it does (its backfill; its indexes below).
                t0 = time.perf_counter()
                for statement in backfill_023():
                    await conn.execute(statement)
                info["backfill_023_s"] = round(time.perf_counter() - t0, 1)
                t0 = time.perf_counter()
                info["index_s"] = await build_indexes(conn, defs)
                info["index_total_s"] = round(time.perf_counter() - t0, 1)
                await conn.execute("VACUUM ANALYZE calls")
                await conn.execute("VACUUM ANALYZE call_parties")
                await conn.execute("VACUUM ANALYZE call_tags")
                await conn.execute("VACUUM ANALYZE call_search")
                await users.add_user(conn, "sup", "supervisor", None)
                if args.fill_only:
                    print(json.dumps(info), flush=True)
                    print(f"database kept: {name}", flush=True)
                    return 0
            info["calls"] = await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = 'calls'")
            s = await samples(conn, rng)
            agent_ext = s["agent"][0]
            await conn.execute("DELETE FROM users WHERE name = 'agentx'")
            await users.add_user(conn, "agentx", "agent", None, agent_ext)
            tokens = {}
            for who in ("sup", "agentx"):
                _, tokens[who] = await users.create_token(conn, f"bench-{uuid.uuid4().hex[:6]}", user=who)
            newest = await conn.fetchval("SELECT max(started_at) FROM calls")
        finally:
            await conn.close()
        async with api_server(dsn) as base, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
            plan = queries(s)
            counts = [(n, v if v is not None else (
                [{"from": d["from"], "to": d["to"]} for d in dict(plan)["a day"]] if "day" in n else
                [{"number": x} for x in s["number"]])) for n, v in COUNTS]
            for who, label in (("sup", "supervisor"), ("agentx", "agent")):
                for fname, variants in plan:
                    ms, found = await run_filter(http, base + "/api/v1/calls", tokens[who], variants,
                                                 args.runs)
                    results.append({"name": f"{label}: {fname}", "p50_ms": round(pct(ms, 50), 1),
                                    "p95_ms": round(pct(ms, 95), 1), "rows": found,
                                    "params": variants[0]})
                    print(f"  {results[-1]['name']}: {results[-1]['p50_ms']} / {results[-1]['p95_ms']} ms",
                          file=sys.stderr, flush=True)
                for fname, variants in counts:
                    ms, _ = await run_filter(http, base + "/api/v1/calls/count", tokens[who], variants,
                                             args.runs)
                    _, body = await timed(http, base + "/api/v1/calls/count", tokens[who], variants[0])
                    results.append({"name": f"{label}: {fname}", "p50_ms": round(pct(ms, 50), 1),
                                    "p95_ms": round(pct(ms, 95), 1), "params": variants[0],
                                    "count": body["count"], "count_exact": body.get("count_exact")})
                start = (newest - __import__("datetime").timedelta(days=200)).isoformat()
                ms = await deep_paging(http, base, tokens[who], args.runs, start)
                results.append({"name": f"{label}: deep keyset paging (200 days back)",
                                "p50_ms": round(pct(ms, 50), 1), "p95_ms": round(pct(ms, 95), 1),
                                "params": {}})
        slowest = max(results, key=lambda r: r["p95_ms"])
        info["slowest"] = slowest["name"]
        info["explain"] = await explain(dsn, slowest, s["agent"][0])
    if args.json:
        print(json.dumps([{"name": r["name"], "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"]} for r in results]))
        return 0
    print(f"calls: {info['calls']:,}" + (f"; fill {info['fill_s']} s; migration 023's backfill "
                                         f"{info['backfill_023_s']} s; indexes built (CONCURRENTLY) in "
                                         f"{info['index_total_s']} s" if "fill_s" in info else ""))
    if "index_s" in info:
        for k, v in info["index_s"].items():
            print(f"  {k}: {v} s")
    print(f"{'filter':<58} {'p50 ms':>8} {'p95 ms':>8}  rows/count")
    for r in results:
        extra = r.get("count", r.get("rows", ""))
        if "count_exact" in r:
            extra = f"{extra} ({'exact' if r['count_exact'] else 'estimate'})"
        print(f"{r['name']:<58} {r['p50_ms']:>8} {r['p95_ms']:>8}  {extra}")
    print(f"\nslowest: {info['slowest']}\n{info['explain']}")
    if args.keep:
        print(f"database kept: {name}")
    return 0


async def explain(dsn: str, result: dict[str, Any], agent_ext: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a result's first query as the API runs it."""
    p = (Principal("agentx", "agent", agent_ext) if result["name"].startswith("agent:")
         else Principal("sup", "supervisor"))
    values = {k: [v] for k, v in result["params"].items()}
    f = callquery.parse_filter(lambda k: values.get(k, []))
    conn = await asyncpg.connect(dsn)
    out: list[str] = []
    try:
        driver = callquery.plan(f, p)
        if ": count" in result["name"]:
            queries = [callquery.count_sql(f, p)]
        elif driver == "q_walk":  # the walk, and the fallback when the walk does not fill the page
            queries = [callquery.search_sql(f, p, limit=f.limit + 1, driver="q_walk",
                                            walk_rows=callquery.Q_WALK_ROWS)]
            rows = await conn.fetch(queries[0][0], *queries[0][1])
            last = await conn.fetchrow("SELECT started_at, call_id FROM call_search ORDER BY started_at DESC, "
                                       "call_id DESC OFFSET $1 LIMIT 1", callquery.Q_WALK_ROWS - 1)
            if len(rows) <= f.limit and last is not None and not f.since and not f.until:
                queries.append(callquery.search_sql(f, p, limit=f.limit + 1 - len(rows), driver="q_set",
                                                    older_than=(last["started_at"], last["call_id"])))
        else:
            queries = [callquery.search_sql(f, p, limit=f.limit + 1, driver=driver)]
        out.append(f"(driver: {driver}, {len(queries)} quer{'y' if len(queries) == 1 else 'ies'})")
        for sql, sql_args in queries:
            async with conn.transaction():
                await conn.execute(callquery.CUSTOM_PLANS)
                await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # as the API's connections
                out += [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *sql_args)]
    finally:
        await conn.close()
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
