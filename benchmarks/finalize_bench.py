#!/usr/bin/env python3
"""A 1-hour recording finalized after Asterisk closes it, against ``sha256sum`` of the same file.

    .venv/bin/python benchmarks/finalize_bench.py [--minutes 60] [--runs 3] [--json]
    make bench BENCH_ARGS=--finalize

Writes what MixMonitor leaves after a 1-hour call: a mono WAV (8 kHz, 16-bit: 57.6 MB) and, for a
stereo call, its two per-direction parts (caller, agent), with speech-like noise in them; then per run:
- ``sha256sum`` of the mono file (the floor: one read of the file, hashed in C);
- mono: callrec's finalize (``recording.files.finalize``: the header checked closed, duration, size,
  RMS and peak, sha256) and the call-log row written (an UPDATE in a throwaway database);
- stereo: ``recording.stereo.finalize_stereo`` (both parts merged into one 2-channel WAV, measured per
  channel, hashed, parts removed) and the row written.
The files are fresh in the page cache, as they are when Asterisk has just closed them.  Needs the
local PostgreSQL (tools/testdb.py), no Asterisk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import soundfile
from benchkit import bench_database

from callrec.recording.files import finalize
from callrec.recording.stereo import finalize_stereo, part_names
from callrec.store import migrate
from callrec.store.record import CallRecord

RATE = 8000


def write_wav(path: Path, seconds: int, seed: int) -> None:
    """Speech-like audio: noise bursts at a talker's level, in 60 s blocks (memory stays flat)."""
    rng = np.random.default_rng(seed)
    with soundfile.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16", format="WAV") as f:
        for start in range(0, seconds, 60):
            n = min(60, seconds - start) * RATE
            level = np.repeat(rng.uniform(0, 0.3, n // 4000 + 1), 4000)[:n]
            f.write((rng.standard_normal(n) * level * 3000).clip(-32768, 32767).astype(np.int16))


async def write_row(conn: asyncpg.Connection, call_id: str, facts: dict[str, Any]) -> None:
    cols = list(facts)
    sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
    await conn.execute(f"UPDATE calls SET {sets}, recording_status = 'ready', finalized_at = now() WHERE id = $1",
                       uuid.UUID(call_id), *facts.values())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="callrec-finalize-"))
    result: dict[str, Any] = {"minutes": args.minutes, "runs": args.runs}
    async with bench_database() as db:
        try:
            conn = await asyncpg.connect(db.dsn)
            await migrate(conn)
            call_id = str(uuid.uuid4())
            row = CallRecord(id=call_id, door="ari", uniqueid=call_id, started_at=datetime.now(UTC)).row()
            row["id"] = uuid.UUID(call_id)
            await conn.execute(f"INSERT INTO calls ({', '.join(row)}) VALUES "
                               f"({', '.join(f'${i + 1}' for i in range(len(row)))})", *row.values())
            seconds = args.minutes * 60
            mono = work / "mono.wav"
            rx_name, tx_name = part_names("stereo.wav")
            parts = work / "parts"
            parts.mkdir()
            print(f"writing {args.minutes} min of audio (mono, and two per-direction parts)", file=sys.stderr)
            write_wav(mono, seconds, 1)
            write_wav(parts / rx_name, seconds, 2)
            write_wav(parts / tx_name, seconds, 3)
            sha, fin, stereo = [], [], []
            for i in range(args.runs):
                t0 = time.perf_counter()
                out = subprocess.run(["sha256sum", str(mono)], check=True, capture_output=True, text=True).stdout
                sha.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                facts = await finalize(mono, timeout=10)
                await write_row(conn, call_id, facts.facts)
                fin.append(time.perf_counter() - t0)
                if facts.facts["recording_sha256"] != out.split()[0]:
                    raise SystemExit("finalize_bench: callrec's sha256 differs from sha256sum's")
                # The merge removes its parts: each run merges a fresh copy of them.
                local = work / f"run{i}"
                shutil.copytree(parts, local)
                os.sync()
                t0 = time.perf_counter()
                sfacts = await finalize_stereo(local, "stereo.wav", timeout=10)
                await write_row(conn, call_id, sfacts.facts)
                stereo.append(time.perf_counter() - t0)
                if sfacts.status.value != "ready" or sfacts.facts["recording_channels"] != 2:
                    raise SystemExit(f"finalize_bench: stereo merge failed: {sfacts}")
                shutil.rmtree(local)
                print(f"run {i + 1}: sha256sum {sha[-1]:.3f} s, mono finalize {fin[-1]:.3f} s, "
                      f"stereo merge + finalize {stereo[-1]:.3f} s", file=sys.stderr)
            await conn.close()
            result.update({
                "file_mb": round(mono.stat().st_size / 1e6, 1),
                "sha256sum_s": round(statistics.median(sha), 3),
                "mono_finalize_s": round(statistics.median(fin), 3),
                "stereo_finalize_s": round(statistics.median(stereo), 3),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            })
            result["mono_ratio"] = round(result["mono_finalize_s"] / result["sha256sum_s"], 1)
            return result
        finally:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=60, help="length of the call (default 60)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    r = asyncio.run(run(args))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"| {args.minutes}-minute call, {r['file_mb']} MB mono WAV (median of {args.runs}, "
              f"load {r['load_avg_1m']}) | seconds | vs sha256sum |\n|---|---:|---:|\n"
              f"| `sha256sum` of the file (baseline) | {r['sha256sum_s']:.3f} | 1.0x |\n"
              f"| mono: finalized (closed, measured, hashed) and the row written | {r['mono_finalize_s']:.3f} | "
              f"{r['mono_ratio']:.1f}x |\n"
              f"| stereo: both parts merged, measured per channel, hashed, the row written | "
              f"{r['stereo_finalize_s']:.3f} | {r['stereo_finalize_s'] / r['sha256sum_s']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
