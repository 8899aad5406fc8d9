"""Waveform peaks of a recording, for the console's player.

One peak per bucket and channel: the largest absolute sample in the bucket, 0..255 of full scale
(a byte each, so an hour of stereo is a few kilobytes of JSON).  A stereo recording keeps its two
channels apart (left: the caller, right: the agent; ``recording.stereo``), so the player shows who
talked when.  The bucket is sized so a call of any length has at most ``MAX_BUCKETS`` of them.

Reading is blocking: run it in the recordings thread pool (``files.in_files``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import soundfile

MAX_BUCKETS = 2000
MIN_BUCKET_MS = 10
# Buckets read at a time: bounded memory whatever the call's length.
READ_BUCKETS = 256


@dataclass(frozen=True)
class Peaks:
    channels: int
    bucket_ms: int
    duration_ms: int
    peaks: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "buckets": len(self.peaks[0]) if self.peaks else 0,
                "bucket_ms": self.bucket_ms, "duration_ms": self.duration_ms, "peaks": self.peaks}


def bucket_ms_for(duration_ms: int) -> int:
    """The bucket length that gives at most MAX_BUCKETS buckets (never under MIN_BUCKET_MS)."""
    return max(MIN_BUCKET_MS, math.ceil(duration_ms / MAX_BUCKETS))


def compute_peaks(fh: IO[bytes]) -> Peaks:
    """The peaks of an open WAV (any sample format soundfile reads, one or two channels)."""
    with soundfile.SoundFile(fh) as snd:
        rate, channels, frames = snd.samplerate, snd.channels, snd.frames
        duration_ms = int(frames * 1000 // rate) if rate else 0
        bucket_ms = bucket_ms_for(duration_ms)
        per_bucket = max(1, rate * bucket_ms // 1000)
        out: list[list[int]] = [[] for _ in range(channels)]
        # 16-bit integers, the telephone recordings' own format: no conversion to float on the way.
        for block in snd.blocks(blocksize=per_bucket * READ_BUCKETS, dtype="int16", always_2d=True):
            n = block.shape[0]
            if not n:
                continue
            whole = n // per_bucket * per_bucket
            parts = []
            if whole:
                # Channel-major and contiguous: each bucket's reduction runs over adjacent samples (fast).
                shaped = np.ascontiguousarray(block[:whole].T).reshape(channels, -1, per_bucket)
                parts.append(np.maximum(shaped.max(axis=2).astype(np.int32), -shaped.min(axis=2).astype(np.int32)).T)
            if n > whole:  # the last, shorter bucket
                rest = block[whole:]
                parts.append(np.maximum(rest.max(axis=0, keepdims=True).astype(np.int32),
                                        -rest.min(axis=0, keepdims=True).astype(np.int32)))
            levels = np.clip((np.concatenate(parts) * 255 + 16384) // 32768, 0, 255)
            for ch in range(channels):
                out[ch].extend(levels[:, ch].tolist())
    return Peaks(channels, bucket_ms, duration_ms, out)
