#!/usr/bin/env python3
"""Data-ops benchmark: `verify` and a retention pass over many generated calls with real WAV files.
Not a timed test: it prints figures (calls/s, MB/s, peak RSS) for the docs.

    .venv/bin/python benchmarks/dataops_bench.py [--calls 5000] [--seconds 10] [--json]

It makes a throwaway database (tools/testdb.py finds PostgreSQL) and a temp recordings folder,
writes one WAV per call (8 kHz 16-bit mono, ``--seconds`` long) and its row with the real sha256,
then times: verify (hash every file + orphan scan), a retention pass that deletes every
recording (batches of 200, audited per call), and verify again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import soundfile
from benchkit import bench_database

from callrec.config.dataops import RetentionSettings
from callrec.dataops.integrity import verify
from callrec.dataops.retention import run_retention
from callrec.store import connect_pool, migrate


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def write_files(rec: Path, n: int, seconds: float) -> list[tuple[str, str, str, int, datetime]]:
    """(call id, sha256, relative path, bytes, start) per generated recording."""
    t = np.arange(int(8000 * seconds)) / 8000.0
    base = datetime.now(UTC) - timedelta(days=100)
    out = []
    for i in range(n):
        call_id = str(uuid.uuid4())
        started = base + timedelta(seconds=i)
        rel = f"{started:%Y/%m/%d}/{call_id}.wav"
        path = rec / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), 0.2 * np.sin(2 * np.pi * (300 + i % 400) * t), 8000, subtype="PCM_16")
        data = path.read_bytes()
        out.append((call_id, hashlib.sha256(data).hexdigest(), rel, len(data), started))
    return out


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each recording")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    figures: dict[str, object] = {"calls": args.calls, "seconds_per_recording": args.seconds}
    async with bench_database() as db:
        dsn = db.dsn
        with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp:
            rec = Path(tmp)
            conn = await asyncpg.connect(dsn)
            await migrate(conn)
            files = await asyncio.to_thread(write_files, rec, args.calls, args.seconds)
            rows = []
            for call_id, digest, rel, size, started in files:
                rows.append((uuid.UUID(call_id), "ari", call_id[:8], "notice", "ended", "implied", started,
                             started + timedelta(seconds=60), started + timedelta(seconds=61), "ready", rel,
                             size, digest, "+4930" + call_id[:6]))
            await conn.copy_records_to_table(
                "calls", records=rows,
                columns=["id", "door", "uniqueid", "consent_mode", "state", "consent", "started_at", "ended_at",
                         "finalized_at", "recording_status", "recording_path", "recording_bytes",
                         "recording_sha256", "caller_number"])
            await conn.execute("ANALYZE calls")
            total_mb = sum(f[3] for f in files) / 1e6
            figures["total_mb"] = round(total_mb, 1)
            pool = await connect_pool(dsn, 1, 3)
            try:
                t0 = time.perf_counter()
                report = await verify(pool, rec, orphan_min_age=0)
                dt = time.perf_counter() - t0
                assert report.ok == args.calls and not report.problems, report.as_dict()
                figures["verify_s"] = round(dt, 2)
                figures["verify_calls_per_s"] = round(args.calls / dt)
                figures["verify_mb_per_s"] = round(total_mb / dt, 1)

                t0 = time.perf_counter()
                result = await run_retention(pool, RetentionSettings(audio_days=30), rec)
                dt = time.perf_counter() - t0
                assert result.audio_deleted == args.calls, result.as_dict()
                figures["retention_s"] = round(dt, 2)
                figures["retention_calls_per_s"] = round(args.calls / dt)
                audits = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'delete_audio'")
                figures["audit_rows"] = audits

                t0 = time.perf_counter()
                again = await verify(pool, rec, orphan_min_age=0)
                figures["verify_after_s"] = round(time.perf_counter() - t0, 2)
                assert again.checked == 0 and not again.problems
            finally:
                await pool.close()
                await conn.close()
        figures["peak_rss_mb"] = round(rss_kb() / 1024, 1)
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:24} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
