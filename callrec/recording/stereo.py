"""Stereo recordings: the caller on the left channel, the agent on the right.

MixMonitor's own stereo option (``D``) writes interleaved samples under a mono WAV header.  So
callrec asks MixMonitor for no mixed file at all, only its per-direction files (``r()``: what
the recorded channel says, ``t()``: what it hears), which Asterisk keeps sample-aligned by
inserting silence (its default since the ``n`` option exists).  After the hang-up, once
Asterisk has closed both, they are merged into one standard 2-channel 16-bit WAV at
``YYYY/MM/DD/<call id>.wav`` (the path in the call log) and the parts are removed.  Muted
(paused) stretches are silence in both parts, so they are silence in both channels.

All file work runs in the recordings thread pool; nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from callrec.recording.files import (
    OutsideFolder,
    RecordingFacts,
    dbfs,
    in_files,
    measure_unclosed,
    recording_path,
    scan_pcm16,
    sha256_file,
    wav_is_closed,
)
from callrec.recording.status import RecordingStatus

BLOCK_FRAMES = 8000 * 10
FULL_SCALE = 32768.0


def part_names(file: str) -> tuple[str, str]:
    """``2026/11/28/<id>.wav`` -> (``.../<id>-rx.wav``, ``.../<id>-tx.wav``): the caller's voice, the agent's."""
    stem = file[:-4] if file.endswith(".wav") else file
    return f"{stem}-rx.wav", f"{stem}-tx.wav"


def mixmonitor_args(recordings_dir: str, file: str, options: str) -> tuple[str, str]:
    """MixMonitor's File and Options for a stereo recording: no mixed file, one file per direction.

    The paths come from the validated ``recordings.dir``, the date and the call's uuid only, so
    nothing a caller chose reaches MixMonitor's option string.
    """
    base = recordings_dir.rstrip("/")
    rx, tx = part_names(file)
    return "", f"{options}r({base}/{rx})t({base}/{tx})"


def has_parts(local_dir: Path, file: str) -> bool:
    """A per-direction file of ``file`` is in the recordings folder.  Blocking."""
    for name in part_names(file):
        try:
            if recording_path(local_dir, name).exists():
                return True
        except OutsideFolder:
            pass
    return False


def merge(rx: Path | None, tx: Path | None, out: Path) -> None:
    """Write ``out`` as a 2-channel 16-bit WAV: left = rx, right = tx.

    A missing part counts as silence; the shorter part is padded with silence.  Samples are
    copied as integers: the merge is lossless.  The file appears under its final name only
    once complete (written beside it, then renamed).
    """
    sources = [soundfile.SoundFile(str(p)) if p is not None else None for p in (rx, tx)]
    try:
        rates = {s.samplerate for s in sources if s is not None}
        if len(rates) != 1:
            raise ValueError(f"the per-direction files disagree on the sample rate: {sorted(rates)}")
        rate = rates.pop()
        for s in sources:
            if s is not None and s.channels != 1:
                raise ValueError(f"a per-direction file has {s.channels} channels, expected 1")
        tmp = out.with_name(out.name + ".part")
        with soundfile.SoundFile(str(tmp), mode="w", samplerate=rate, channels=2, subtype="PCM_16",
                                 format="WAV") as dst:
            while True:
                blocks = [s.read(BLOCK_FRAMES, dtype="int16") if s is not None else None for s in sources]
                n = max((len(b) for b in blocks if b is not None), default=0)
                if n == 0:
                    break
                stereo = np.zeros((n, 2), dtype=np.int16)
                for ch, block in enumerate(blocks):
                    if block is not None:
                        stereo[: len(block), ch] = block
                dst.write(stereo)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        for s in sources:
            if s is not None:
                s.close()


def measure_stereo(path: Path) -> dict[str, Any]:
    """The usual facts (duration, size, RMS and peak over all samples, sha256) plus each
    channel's RMS and peak level, in one pass over the samples."""
    scan = scan_pcm16(path)  # what merge() writes: one read of the file for all of it
    if scan is not None:
        fast: dict[str, Any] = {**scan.facts(), "recording_channels": scan.channels}
        if scan.channels == 2:
            frames = scan.frames
            fast.update({
                "recording_left_rms_dbfs": _level(scan.sum_sq[0], frames),
                "recording_left_peak_dbfs": dbfs(scan.peak[0] / FULL_SCALE),
                "recording_right_rms_dbfs": _level(scan.sum_sq[1], frames),
                "recording_right_peak_dbfs": dbfs(scan.peak[1] / FULL_SCALE),
            })
        return fast
    digest, _ = sha256_file(path)
    with soundfile.SoundFile(str(path)) as snd:
        rate, channels = snd.samplerate, snd.channels
        sq = [0.0] * channels
        peak = [0] * channels
        frames = 0
        for block in snd.blocks(blocksize=BLOCK_FRAMES, dtype="int16", always_2d=True):
            wide = block.astype(np.int64)
            for ch in range(channels):
                sq[ch] += float(np.square(wide[:, ch]).sum())
                peak[ch] = max(peak[ch], int(np.abs(wide[:, ch]).max(initial=0)))
            frames += block.shape[0]

    def level(total: float, count: int) -> float:
        return dbfs(math.sqrt(total / count) / FULL_SCALE) if count else -120.0

    facts: dict[str, Any] = {
        "recording_duration": round(frames / rate, 3) if rate else 0.0,
        "recording_bytes": path.stat().st_size,
        "recording_rms_dbfs": level(sum(sq), channels * frames),
        "recording_peak_dbfs": dbfs(max(peak, default=0) / FULL_SCALE),
        "recording_sha256": digest,
        "recording_channels": channels,
    }
    if channels == 2:
        facts.update({
            "recording_left_rms_dbfs": level(sq[0], frames),
            "recording_left_peak_dbfs": dbfs(peak[0] / FULL_SCALE),
            "recording_right_rms_dbfs": level(sq[1], frames),
            "recording_right_peak_dbfs": dbfs(peak[1] / FULL_SCALE),
        })
    return facts


def _level(total: float, count: int) -> float:
    return dbfs(math.sqrt(total / count) / FULL_SCALE) if count else -120.0


def _remove(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            p.unlink(missing_ok=True)


async def finalize_stereo(local_dir: Path, file: str, timeout: float, poll: float = 0.2) -> RecordingFacts:
    """Wait until Asterisk has closed both per-direction files, merge them, measure, clean up.

    Statuses as for mono recordings: MISSING (no part appeared), EMPTY (no audio: parts
    removed, no file), UNCLOSED (a part was never closed: parts kept untouched, measured from
    raw audio, no merge), FAILED (unreadable), READY.
    """
    try:
        out = await in_files(recording_path, local_dir, file)
        rx, tx = [await in_files(recording_path, local_dir, name) for name in part_names(file)]
    except OutsideFolder as exc:
        return RecordingFacts(RecordingStatus.FAILED, {"recording_error": str(exc)[:500]})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def state() -> tuple[list[Path], bool]:
        present = [p for p in (rx, tx) if p.exists()]
        return present, bool(present) and all(wav_is_closed(p) for p in present)

    while True:
        present, closed = await in_files(state)
        # Both parts are opened together; one alone is awaited a little while for the other.
        if closed and (len(present) == 2 or loop.time() >= deadline):
            break
        if loop.time() >= deadline:
            break
        await asyncio.sleep(poll)
    if not present:
        if await in_files(out.exists):  # merged by an earlier run that stopped before logging it
            return RecordingFacts(RecordingStatus.READY, await in_files(measure_stereo, out))
        return RecordingFacts(RecordingStatus.MISSING, {"recording_error": "Asterisk wrote no file"})
    if not closed:
        try:
            facts = await in_files(measure_unclosed, present[0])
        except (RuntimeError, soundfile.LibsndfileError, OSError, ValueError) as exc:
            return RecordingFacts(RecordingStatus.FAILED, {"recording_error": f"unreadable recording: {exc}"[:500]})
        names = ", ".join(p.name for p in present)
        facts["recording_error"] = (f"Asterisk did not close the per-direction files within {timeout:g}s; "
                                    f"not merged, kept as they are: {names}")
        return RecordingFacts(RecordingStatus.UNCLOSED, facts)
    try:
        await in_files(merge, rx if rx in present else None, tx if tx in present else None, out)
        facts = await in_files(measure_stereo, out)
    except (RuntimeError, soundfile.LibsndfileError, OSError, ValueError) as exc:
        return RecordingFacts(RecordingStatus.FAILED, {"recording_error": f"cannot merge to stereo: {exc}"[:500]})
    await in_files(_remove, rx, tx)
    if facts["recording_duration"] == 0:
        await in_files(_remove, out)
        return RecordingFacts(RecordingStatus.EMPTY, {
            "recording_error": "no audio was recorded; the empty file was removed",
            "recording_duration": 0.0, "recording_bytes": 0,
        })
    if len(present) == 1:
        facts["recording_error"] = f"only {present[0].name} was written; the other channel is silence"
    return RecordingFacts(RecordingStatus.READY, facts)
