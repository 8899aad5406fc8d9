"""Finished recordings: wait until Asterisk has closed the file, then measure and hash it.

Asterisk writes the WAV sizes into the header only when it closes the file, so a header whose
sizes agree with the file length means "closed".  All file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from callrec.calls.session import RecordingStatus

BLOCK_FRAMES = 8000 * 10


@dataclass(frozen=True)
class RecordingFacts:
    status: RecordingStatus
    facts: dict[str, Any]


def wav_is_closed(path: Path) -> bool:
    """True when the RIFF and data chunk sizes in the header match the file's length."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            size = fh.seek(0, 2)
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    if struct.unpack_from("<I", head, 4)[0] != size - 8:
        return False
    pos = 12
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"data":
            return pos + 8 + length == size
        pos += 8 + length + (length & 1)
    return False


def measure(path: Path) -> dict[str, Any]:
    """Duration, size, RMS and peak level (dBFS) and sha256 of a finished WAV."""
    return _measure_open(path, soundfile.SoundFile(str(path)))


def _measure_open(path: Path, snd: soundfile.SoundFile, skip_bytes: int = 0) -> dict[str, Any]:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    total_sq = 0.0
    peak = 0.0
    frames = 0
    with snd:
        rate = snd.samplerate
        channels = snd.channels
        if skip_bytes:
            snd.seek(skip_bytes // (2 * channels))
        for block in snd.blocks(blocksize=BLOCK_FRAMES, dtype="float64", always_2d=True):
            if block.size:
                total_sq += float(np.square(block).sum())
                peak = max(peak, float(np.abs(block).max()))
                frames += block.shape[0]
    samples = frames * channels
    rms = math.sqrt(total_sq / samples) if samples else 0.0
    return {
        "recording_duration": round(frames / rate, 3) if rate else 0.0,
        "recording_bytes": path.stat().st_size,
        "recording_rms_dbfs": _dbfs(rms),
        "recording_peak_dbfs": _dbfs(peak),
        "recording_sha256": sha.hexdigest(),
    }


def _dbfs(value: float) -> float:
    return round(20 * math.log10(value), 2) if value > 0 else -120.0


async def finalize(path: Path, timeout: float, poll: float = 0.2) -> RecordingFacts:
    """Wait for Asterisk to close ``path`` (up to ``timeout``), then measure it.

    A file that never appears is MISSING.  A closed file with no audio is EMPTY and is removed, so
    ops never find zero-length "recordings".  A file Asterisk never closed (it crashed, or is still
    writing) is kept and measured from its raw audio: UNCLOSED, never deleted.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    closed = False
    while True:
        if await _in_files(wav_is_closed, path):
            closed = True
            break
        if loop.time() >= deadline:
            break
        await asyncio.sleep(poll)
    if not await _in_files(path.exists):
        return RecordingFacts(RecordingStatus.MISSING, {"recording_error": "Asterisk wrote no file"})
    try:
        facts = await _in_files(measure if closed else measure_unclosed, path)
    except (RuntimeError, soundfile.LibsndfileError, OSError, ValueError) as exc:
        return RecordingFacts(RecordingStatus.FAILED, {"recording_error": f"unreadable recording: {exc}"[:500]})
    if not closed:
        facts["recording_error"] = (f"Asterisk did not close the file within {timeout:g}s; "
                                    "measured from its raw audio, file kept")
        return RecordingFacts(RecordingStatus.UNCLOSED, facts)
    if facts["recording_duration"] == 0:
        await _in_files(path.unlink, True)
        return RecordingFacts(RecordingStatus.EMPTY, {
            "recording_error": "no audio was recorded; the empty file was removed",
            "recording_duration": 0.0, "recording_bytes": 0,
        })
    return RecordingFacts(RecordingStatus.READY, facts)


def measure_unclosed(path: Path) -> dict[str, Any]:
    """A WAV whose header sizes were never written: read the samples after the 44-byte header
    Asterisk writes (8 kHz, 16-bit, mono for .wav)."""
    with open(path, "rb") as fh:
        head = fh.read(44)
    if len(head) < 44 or head[:4] != b"RIFF":
        raise ValueError("no WAV header")
    channels, rate = struct.unpack_from("<HI", head, 22)
    raw = soundfile.SoundFile(str(path), mode="r", format="RAW", subtype="PCM_16", samplerate=rate,
                              channels=channels or 1, endian="LITTLE")
    return _measure_open(path, raw, skip_bytes=44)


# File work (polling, hashing, reading audio) gets its own small pool, so a burst of hang-ups
# never queues ahead of the default executor other parts of the process rely on.
_FILES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="callrec-files")


async def _in_files(func: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_FILES, func, *args)
