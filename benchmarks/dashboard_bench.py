#!/usr/bin/env python3
"""Dashboard benchmark: the dashboard's aggregates over 1,000,000 generated calls (PostgreSQL only),
p50/p95 per range and role, through the HTTP API as the console asks for them.  Target: p95 < 300 ms for
every range (7 days, the default 30 days, this month, a whole year) and role.

    .venv/bin/python benchmarks/dashboard_bench.py [--calls 1000000] [--runs 15] [--json] [--check]

It makes a throwaway database (tools/testdb.py finds PostgreSQL), fills ``calls`` with a year of calls
(about 2,700 a day: consent outcomes, recording outcomes, 80 agents, 2 % confidential) and ``alerts`` for
2 % of them, then times ``GET /api/v1/dashboard`` for a supervisor, an agent and an admin.  ``--check``
exits 1 when a p95 is over the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from benchkit import api_server, bench_database

from callrec.store import migrate, users

TARGET_MS = 300.0
END = datetime(2026, 12, 5, tzinfo=UTC)
DAYS = 365


async def fill(conn: asyncpg.Connection, calls: int) -> None:
    """A year of calls ending at END, spread evenly; outcomes drawn by fixed shares (hash of the row number)."""
    step = DAYS * 86400 / calls
    await conn.execute(
        """INSERT INTO calls (id, door, uniqueid, channel, caller_number, called_number, direction, consent_mode,
               state, consent, started_at, ended_at, recording_status, recording_duration, agent, confidential)
           SELECT gen_random_uuid(), 'ari', 'u' || i, 'PJSIP/t-' || i, '+7916' || (1000000 + i % 9000000),
                  '200', CASE WHEN h % 5 = 0 THEN 'outbound' ELSE 'inbound' END,
                  CASE WHEN h % 3 = 0 THEN 'opt-in' ELSE 'notice' END, 'ended',
                  (ARRAY['implied','implied','implied','granted','granted','declined','not_given','abandoned',
                         'notice_failed','unavailable'])[1 + h % 10],
                  $2::timestamptz - (i * $3::double precision) * interval '1 second',
                  $2::timestamptz - (i * $3::double precision) * interval '1 second' + interval '95 seconds',
                  CASE WHEN h % 10 IN (5, 6, 7) THEN 'none' WHEN h % 97 = 1 THEN 'failed'
                       WHEN h % 97 = 2 THEN 'missing' WHEN h % 97 = 3 THEN 'empty' ELSE 'ready' END,
                  90.0, (200 + (h / 10) % 80)::text, h % 50 = 7
             FROM (SELECT i, abs(hashint4(i::int)) AS h FROM generate_series(1, $1) AS i) g""",
        calls, END, step)
    await conn.execute(
        """INSERT INTO alerts (rule, call_id, kind, phrase, speaker, offset_ms, created_at)
           SELECT (ARRAY['threat','refund','manager'])[1 + abs(hashint4(n::int)) % 3], id, 'said', 'x', 'caller', 1000,
                  started_at + interval '10 minutes'  -- raised when the transcript is saved, after the call
             FROM (SELECT id, started_at, row_number() OVER () AS n
                     FROM calls TABLESAMPLE BERNOULLI (2) REPEATABLE (1)) s""")
    await conn.execute("VACUUM ANALYZE calls")
    await conn.execute("VACUUM ANALYZE alerts")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--check", action="store_true", help=f"exit 1 when a p95 is over {TARGET_MS:g} ms")
    ap.add_argument("--keep", action="store_true", help="keep the filled database (its name is printed; drop it "
                    "when done: the disk is shared)")
    ap.add_argument("--reuse", metavar="DATABASE", help="time a database kept by --keep (migrated, not refilled)")
    args = ap.parse_args()
    results: dict[str, Any] = {"calls": args.calls, "runs": args.runs, "target_ms": TARGET_MS, "ranges": {}}
    async with bench_database(args.reuse, drop=not (args.keep or args.reuse), must_exist=bool(args.reuse)) as db:
        dsn = db.dsn
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            t0 = time.perf_counter()
            if not args.reuse:
                await fill(conn, args.calls)
            results["fill_seconds"] = round(time.perf_counter() - t0, 1)
            tokens = {}
            for role, ext in (("supervisor", None), ("agent", "204"), ("admin", None)):
                if not await conn.fetchval("SELECT 1 FROM users WHERE name = $1", f"bench-{role}"):
                    await users.add_user(conn, f"bench-{role}", role, None, extension=ext)
                tokens[role] = (await users.create_token(conn, f"bench-{role}-{uuid.uuid4().hex[:6]}",
                                                         user=f"bench-{role}"))[1]
        finally:
            await conn.close()
        ranges = {"7 days": 7, "30 days (default)": 30, "this month": 5, "365 days": DAYS}
        async with api_server(dsn) as base, aiohttp.ClientSession() as http:
            url = base + "/api/v1/dashboard"
            for label, days in ranges.items():
                for role, token in tokens.items():
                    params = {"from": (END - timedelta(days=days)).isoformat(), "to": END.isoformat(),
                              "tz": "Europe/Moscow"}
                    times = []
                    for _ in range(args.runs + 1):  # the first run warms the cache, not counted
                        t0 = time.perf_counter()
                        async with http.get(url, params=params,
                                            headers={"Authorization": f"Bearer {token}"}) as r:
                            body = await r.json()
                            assert r.status == 200, body
                        times.append((time.perf_counter() - t0) * 1000)
                    times = times[1:]
                    results["ranges"].setdefault(label, {})[role] = {
                        "p50_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 0.95), 1),
                        "calls_counted": body["total"]}
        if args.keep or args.reuse:
            print(f"kept database {db.name}", file=sys.stderr)
    over = [f"{label} / {role}" for label, per in results["ranges"].items()
            for role, r in per.items() if r["p95_ms"] >= TARGET_MS]
    results["over_target"] = over
    if args.json:
        print(json.dumps(results))
    else:
        print(f"calls: {args.calls:,} over {DAYS} days (fill {results['fill_seconds']} s); "
              f"{args.runs} runs each; target p95 < {TARGET_MS:g} ms")
        for label, per in results["ranges"].items():
            for role, r in per.items():
                print(f"{label:>18} {role:>10}: p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                      f"({r['calls_counted']:,} calls)")
        print("over target: " + (", ".join(over) if over else "none"))
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
