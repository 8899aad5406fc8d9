"""Waveform peaks for the console's player: time to compute them from a recording of a given length.

Writes a stereo 16-bit 8 kHz WAV of noise (the worst case: no silent stretch) to a temporary folder,
computes its peaks with callrec.recording.waveform.compute_peaks three times, and prints the best
time, the bucket count and the size of the JSON the API sends (once; the peaks are kept afterwards).

    .venv/bin/python benchmarks/waveform_bench.py [--minutes 60] [--channels 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from callrec.recording.waveform import compute_peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--channels", type=int, choices=(1, 2), default=2)
    args = ap.parse_args()
    rate = 8000
    frames = int(args.minutes * 60 * rate)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "call.wav"
        noise = np.random.default_rng(1).standard_normal((frames, args.channels)) * 0.1
        soundfile.write(str(path), noise.astype(np.float32), rate, subtype="PCM_16")
        best = float("inf")
        for _ in range(3):
            with path.open("rb") as fh:
                start = time.perf_counter()
                peaks = compute_peaks(fh)
                best = min(best, time.perf_counter() - start)
        body = json.dumps(peaks.as_dict())
        print(f"{args.minutes:g} min, {args.channels} channel(s), 8 kHz: {best * 1000:.0f} ms; "
              f"{len(peaks.peaks[0])} buckets of {peaks.bucket_ms} ms; JSON {len(body)} bytes")


if __name__ == "__main__":
    main()
