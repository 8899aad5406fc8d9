#!/usr/bin/env python3
"""What one recorded call costs PostgreSQL and storage: the figures docs/scaling.md builds on.

A private PostgreSQL primary with a synchronous streaming standby (made with initdb and
pg_basebackup, as the failover test does; pg_stat_statements loaded), the sandbox Asterisk and a
real `callrec serve` on the two-host DSN.  N complete calls (notice, MixMonitor, the caller talking
5.6 s, hang-up, finalize), placed in waves, first mono then stereo (a daemon restarted with
``recordings.stereo``).  Per call, from the server's own counters over each run: transactions
(pg_stat_database), statements (pg_stat_statements), rows written, WAL bytes (what the standby
receives), and the database's growth; per hour of audio: the WAV bytes of the recordings.

    .venv/bin/python benchmarks/scaling_bench.py [-n 40] [--wave 10] [--json]

Needs the Debian PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) and the sandbox slot
of $CALLREC_SANDBOX_SLOT.  Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tests"))

try:
    import asyncpg
    from caller import Tester

    from callrec.store import migrate
except ImportError as exc:  # pragma: no cover - run with the wrong interpreter
    sys.exit(f"bench: {exc}; run me with the project's venv: make venv && .venv/bin/python {sys.argv[0]}")

import sandbox as sandbox_mod  # noqa: E402
from support.pgpair import PgPair, pg_pair  # noqa: E402

DB = "callrec_scaling"
SPEECH = "sound:vm-intro"  # 5.6 s of a real voice


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int, children: bool = False) -> float:
    """CPU seconds of a process (with ``children``: also of its children it has reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / CLK_TCK


def server_cpu(datadir: Path) -> float:
    """A PostgreSQL server's CPU seconds: the postmaster, its live children and every ended backend."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    total = cpu_of(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                total += cpu_of(int(stat.parent.name))
        except (OSError, ValueError):
            continue  # ended meanwhile: counted in the postmaster's children
    return total


def progress(text: str) -> None:
    print(f"[scaling] {text}", file=sys.stderr, flush=True)


COUNTERS = """
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
       (SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database
         WHERE datname = current_database()) AS rows_written,
       (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database()) AS statements,
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn,
       pg_database_size(current_database()) AS db_bytes
"""


async def counters(conn: asyncpg.Connection) -> dict[str, Any]:
    await conn.execute("SELECT pg_stat_force_next_flush()")  # this backend's own counts, too
    return dict(await conn.fetchrow(COUNTERS))


async def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)  # the poll interval: rows written in the background announce nothing


async def run_calls(pair: PgPair, info: sandbox_mod.SandboxInfo, tester: Tester, work: Path, stereo: bool,
                    n: int, wave: int) -> dict[str, Any]:
    cfg = work / ("stereo.toml" if stereo else "mono.toml")
    cfg.write_text(sandbox_mod.callrec_config(
        info, pair.failover_dsn(DB), log={"level": "info"}, notice={"decision_window": 1},
        recordings={"stereo": stereo}, database={"journal_dir": str(work / "journal")}))
    log_path = work / ("stereo.log" if stereo else "mono.log")
    exe = Path(sys.executable).parent / "callrec"
    conn = await asyncpg.connect(pair.admin_dsn(pair.primary_port, DB))
    try:
        first = await conn.fetchval("SELECT count(*) FROM calls")
        # From before the daemon starts to after it stopped: a backend's statistics reach the
        # server's counters at the latest when it ends (start and stop are spread over the n calls).
        before = await counters(conn)
        pg_cpu0 = server_cpu(pair.primary_dir)
        with open(log_path, "w") as out:
            proc = subprocess.Popen([str(exe), "-c", str(cfg), "serve"], stdout=out, stderr=subprocess.STDOUT)
        try:
            async def up() -> bool:
                return "ARI events connected" in log_path.read_text()

            await wait(up, 30, "callrec serve")
            t0 = time.monotonic()
            done = 0
            while done < n:
                calls = await asyncio.gather(*(tester.place_call() for _ in range(min(wave, n - done))))
                for c in calls:
                    await c.handed_back()
                plays = [await c.speak(SPEECH) for c in calls]
                await asyncio.gather(*(c.spoken(p) for c, p in zip(calls, plays, strict=True)))
                await asyncio.gather(*(c.hang_up() for c in calls))
                done += len(calls)
            target = first + n

            async def finalized() -> bool:
                return bool(await conn.fetchval("SELECT count(*) = $1 AND bool_and(finalized_at IS NOT NULL) "
                                                "FROM calls", target))

            await wait(finalized, 90, "every call finalized")
            elapsed = time.monotonic() - t0
            daemon_cpu = cpu_of(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
        after = await counters(conn)
        pg_cpu = server_cpu(pair.primary_dir) - pg_cpu0
        audio = await conn.fetchrow(
            "SELECT sum(recording_bytes) AS bytes, sum(recording_duration) AS seconds, count(*) AS calls, "
            "min(recording_channels) AS channels FROM (SELECT * FROM calls ORDER BY started_at DESC LIMIT $1) c "
            "WHERE recording_status = 'ready'", n)
        # The rows themselves (growth above is in whole 8 kB pages): a call's row and its parties' rows.
        row_bytes = await conn.fetchval(
            "SELECT avg(pg_column_size(c.*) + coalesce((SELECT sum(pg_column_size(p.*)) FROM call_parties p "
            "WHERE p.call_id = c.id), 0)) FROM (SELECT * FROM calls ORDER BY started_at DESC LIMIT $1) c", n)
        indexes = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename IN ('calls', 'call_parties')")
        statements = await conn.fetch(
            "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() ORDER BY calls DESC LIMIT 8")
    finally:
        await conn.close()
    per = {k: (int(after[k]) - int(before[k])) / n for k in ("commits", "rows_written", "statements", "db_bytes")}
    per["wal_bytes"] = (int(after["lsn"]) - int(before["lsn"])) / n
    per["daemon_cpu_ms"] = daemon_cpu * 1000 / n
    per["postgres_cpu_ms"] = pg_cpu * 1000 / n
    assert audio is not None
    return {
        "stereo": stereo, "calls": n, "seconds": round(elapsed, 1),
        "per_call": {k: round(v, 1) for k, v in per.items()},
        "audio_bytes_per_second": round(float(audio["bytes"]) / float(audio["seconds"]), 1),
        "recording_channels": audio["channels"], "recorded": audio["calls"],
        "row_bytes": round(float(row_bytes)), "indexes_on_calls_and_parties": indexes,
        "top_statements": [dict(r) for r in statements],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    box = sandbox_mod.Sandbox()
    box.claim()
    info = box.info() if box.is_running() else await asyncio.to_thread(box.start)
    with pg_pair() as pair, tempfile.TemporaryDirectory(prefix="callrec-scaling-") as tmp:
        progress(f"primary :{pair.primary_port}, synchronous standby :{pair.standby_port}")
        admin = await asyncpg.connect(pair.admin_dsn(pair.primary_port))
        try:
            await admin.execute(f'CREATE DATABASE "{DB}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(pair.admin_dsn(pair.primary_port, DB))
        try:
            await migrate(conn)
            await conn.execute("CREATE EXTENSION pg_stat_statements")
        finally:
            await conn.close()
        tester = Tester(info.ari_url, info.tester_ari_user, info.tester_ari_password)
        await tester.start()
        try:
            runs = []
            for stereo in (False, True):
                progress(f"{args.calls} {'stereo' if stereo else 'mono'} calls in waves of {args.wave}")
                runs.append(await run_calls(pair, info, tester, Path(tmp), stereo, args.calls, args.wave))
        finally:
            await tester.close()
    return {"runs": runs}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| per recorded call (5.6 s of talk) | mono | stereo |", "|---|---:|---:|"]
    mono, stereo = result["runs"]
    names = {"commits": "transactions (commits)", "statements": "SQL statements", "rows_written":
             "rows inserted/updated", "wal_bytes": "WAL bytes (shipped to each standby)",
             "db_bytes": "database growth, bytes (rows, indexes, TOAST)",
             "daemon_cpu_ms": "callrec daemon CPU, ms (its start included)",
             "postgres_cpu_ms": "PostgreSQL primary CPU, ms (every process)"}
    for key, name in names.items():
        lines.append(f"| {name} | {mono['per_call'][key]:,.0f} | {stereo['per_call'][key]:,.0f} |")
    lines.append(f"| the call's rows (calls + call_parties, pg_column_size), bytes | {mono['row_bytes']:,} | "
                 f"{stereo['row_bytes']:,} |")
    lines.append(f"| audio bytes per second | {mono['audio_bytes_per_second']:,.0f} | "
                 f"{stereo['audio_bytes_per_second']:,.0f} |")
    lines.append(f"| audio per hour of call, MB | {mono['audio_bytes_per_second'] * 3600 / 1e6:,.1f} | "
                 f"{stereo['audio_bytes_per_second'] * 3600 / 1e6:,.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--calls", type=int, default=40, help="complete calls per run (default 40)")
    parser.add_argument("--wave", type=int, default=10, help="calls placed at once (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=2, default=str) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
