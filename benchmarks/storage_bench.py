"""Encryption at rest, measured (docs/benchmarks.md#encryption-at-rest): one hour of 8 kHz 16-bit mono audio
(57.6 MB) sealed in place, read back whole (decrypt + sha256) against the plain file, and 64 KiB Range reads at
random offsets, encrypted and plain.  Local files only, no server.  ``make bench-storage``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callrec.config.storage import StorageSettings
from callrec.storage import Storage


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=3600, help="audio length (default one hour)")
    ap.add_argument("--reads", type=int, default=200, help="random 64 KiB Range reads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = folder / "master.key"
        key.write_text(os.urandom(32).hex())
        rel = "2026/12/05/bench.wav"
        path = folder / rel
        path.parent.mkdir(parents=True)
        size = 44 + args.seconds * 8000 * 2
        path.write_bytes(b"RIFF" + os.urandom(size - 4))
        plain = Storage(folder, StorageSettings())
        t = time.perf_counter()
        sha, _ = plain.hash(rel)
        plain_hash = time.perf_counter() - t
        plain_reads = _reads(plain, rel, size, args.reads)
        enc = Storage(folder, StorageSettings(encrypt=True, master_key_file=str(key)))
        t = time.perf_counter()
        enc.seal(rel, sha)  # includes its own read-back check
        seal = time.perf_counter() - t
        t = time.perf_counter()
        assert enc.hash(rel)[0] == sha
        enc_hash = time.perf_counter() - t
        enc_reads = _reads(enc, rel, size, args.reads)
        out = {"bytes": size, "plain_hash_s": round(plain_hash, 3), "seal_with_readback_s": round(seal, 3),
               "encrypted_hash_s": round(enc_hash, 3), "overhead_bytes": path.stat().st_size - size,
               "range_64k_plain_ms": plain_reads, "range_64k_encrypted_ms": enc_reads}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def _reads(storage: Storage, rel: str, size: int, n: int) -> dict[str, float]:
    rng = random.Random(1)
    times = []
    for _ in range(n):
        start = rng.randrange(0, size - 65536)
        t = time.perf_counter()
        blob = storage.open(rel)
        data = b"".join(blob.iter_range(start, start + 65535))
        blob.close()
        times.append((time.perf_counter() - t) * 1000)
        assert len(data) == 65536 and hashlib.sha256(data).digest()
    times.sort()
    return {"p50": round(statistics.median(times), 2), "p95": round(times[int(0.95 * len(times)) - 1], 2)}


if __name__ == "__main__":
    raise SystemExit(main())
