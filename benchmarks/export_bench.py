#!/usr/bin/env python3
"""Export benchmark: the API streams a large call log (default 1,000,000 rows) as CSV and JSON with
bounded memory, beside PostgreSQL's own ``COPY (the same SELECT) TO STDOUT WITH CSV`` on the same rows in the
same run (targets: CSV >= 0.5x COPY's rows/s, JSON >= 0.3x).  Not a timed test: it prints the figures
(rows/s, peak RSS) for docs/benchmarks.md; ``--json`` prints them as one object with ``csv_rows_per_s``,
``json_rows_per_s`` and ``copy_rows_per_s``.

    .venv/bin/python benchmarks/export_bench.py [--rows 1000000] [--calls N (the same)] [--json]

It makes a throwaway database (tools/testdb.py finds PostgreSQL), fills ``calls`` in SQL, starts the
API in this process (as `callrec serve` does) and reads each export through HTTP, counting rows and
discarding them.  Memory: VmHWM (peak RSS) of this process, which holds the server; it is read after
a 10%-size warm-up export and again after the full ones, so growth with the row count shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
from benchkit import api_server, bench_database

from callrec.access import Principal
from callrec.store import callquery, migrate, users


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def fill(conn: asyncpg.Connection, rows: int) -> None:
    # Confidential every 50th row: the supervisor's export must leave those out.
    await conn.execute(
        """INSERT INTO calls (id, door, uniqueid, channel, caller_number, caller_name, called_number, consent_mode,
               state, consent, started_at, ended_at, recording_status, recording_duration, agent, confidential)
           SELECT gen_random_uuid(), 'ari', 'u' || i, 'PJSIP/t-' || i, '+4930' || (1000000 + i), 'Caller ' || i,
                  '100', 'notice', 'ended', 'implied', timestamptz '2026-01-01' + i * interval '1 second',
                  timestamptz '2026-01-01' + i * interval '1 second' + interval '65 seconds', 'ready', 60.0,
                  (200 + i % 50)::text, i % 50 = 0
             FROM generate_series(1, $1) AS i""", rows)
    await conn.execute("ANALYZE calls")


async def export(http: aiohttp.ClientSession, url: str, token: str, fmt: str) -> tuple[int, int, float]:
    """(rows, bytes, seconds) of one export, read in chunks and thrown away."""
    t0 = time.perf_counter()
    size = 0
    lines = 0
    async with http.get(url, params={"format": fmt}, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        async for chunk in r.content.iter_chunked(256 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - t0
    rows = lines - 1  # CSV: the header line; JSON: "[" ... "]" around one row per line
    return rows, size, seconds


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", "--calls", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    results: dict[str, object] = {"rows_in_db": args.rows}
    async with bench_database() as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            await migrate(conn)
            t0 = time.perf_counter()
            await fill(conn, args.rows)
            results["fill_seconds"] = round(time.perf_counter() - t0, 1)
            await users.add_user(conn, "sup", "supervisor", None)
            _, token = await users.create_token(conn, "bench", user="sup")
            expected = await conn.fetchval("SELECT count(*) FROM calls WHERE NOT confidential")
            # The baseline: PostgreSQL writing the same rows (the search's SELECT for a supervisor) as CSV.
            sql, sql_args = callquery.search_sql(callquery.CallFilter(), Principal("sup", "supervisor"), limit=None)
            copied = [0, 0]

            async def sink(chunk: bytes) -> None:
                copied[0] += chunk.count(b"\n")
                copied[1] += len(chunk)

            t0 = time.perf_counter()
            await conn.copy_from_query(sql, *sql_args, output=sink, format="csv", timeout=3600)
            seconds = time.perf_counter() - t0
            assert copied[0] == expected, (copied, expected)
            results["copy"] = {"rows": copied[0], "bytes": copied[1], "seconds": round(seconds, 1),
                               "rows_per_s": round(copied[0] / seconds)}
        finally:
            await conn.close()
        async with api_server(db.dsn) as base, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as http:
            url = base + "/api/v1/calls/export"
            results["rss_before_kb"] = rss_kb("VmRSS")
            # Warm-up on a tenth of the rows (a time filter), then the peak so far.
            cut = "2026-01-01T00:00:00Z"
            async with http.get(url, params={"format": "csv", "to": _plus(cut, args.rows // 10)},
                                headers={"Authorization": f"Bearer {token}"}) as r:
                async for _ in r.content.iter_chunked(256 * 1024):
                    pass
            results["peak_rss_after_10pct_kb"] = rss_kb("VmHWM")
            for fmt in ("csv", "json"):
                rows, size, seconds = await export(http, url, token, fmt)
                assert rows == expected, (fmt, rows, expected)
                results[fmt] = {"rows": rows, "bytes": size, "seconds": round(seconds, 1),
                                "rows_per_s": round(rows / seconds)}
            results["peak_rss_kb"] = rss_kb("VmHWM")
    for fmt in ("csv", "json", "copy"):
        results[f"{fmt}_rows_per_s"] = results[fmt]["rows_per_s"]  # type: ignore[index]
    if args.json:
        print(json.dumps(results))
    else:
        print(f"rows in calls: {args.rows:,} (exported by a supervisor: {results['csv']['rows']:,}; "  # type: ignore[index]
              f"confidential ones left out)")
        print(f"fill: {results['fill_seconds']} s")
        for fmt in ("copy", "csv", "json"):
            r = results[fmt]
            print(f"{fmt}: {r['rows']:,} rows, {r['bytes'] / 1e6:.0f} MB in {r['seconds']} s = "  # type: ignore[index]
                  f"{r['rows_per_s']:,} rows/s"  # type: ignore[index]
                  + ("" if fmt == "copy" else f" = {r['rows_per_s'] / results['copy_rows_per_s']:.2f}x COPY"))  # type: ignore
        print(f"RSS before: {results['rss_before_kb'] / 1024:.0f} MB; peak after a 10% export: "  # type: ignore[operator]
              f"{results['peak_rss_after_10pct_kb'] / 1024:.0f} MB; peak after both full exports: "  # type: ignore[operator]
              f"{results['peak_rss_kb'] / 1024:.0f} MB")  # type: ignore[operator]
    return 0


def _plus(start: str, seconds: int) -> str:
    from datetime import datetime, timedelta

    return (datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(seconds=seconds)).isoformat()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
