"""Finalizing recordings: closed, empty, unclosed (Asterisk crashed) and missing files."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from callrec.calls.session import RecordingStatus
from callrec.recording.files import finalize, wav_is_closed

RATE = 8000


def asterisk_wav(path: Path, seconds: float, closed: bool, amplitude: int = 8000) -> bytes:
    """A WAV as Asterisk's format_wav writes it: 44-byte header, sizes filled in only at close."""
    t = np.arange(int(RATE * seconds))
    data = (amplitude * np.sin(2 * np.pi * 440 * t / RATE)).astype("<i2").tobytes()
    riff, size = (36 + len(data), len(data)) if closed else (0, 0)
    header = (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
              + b"data" + struct.pack("<I", size))
    path.write_bytes(header + data)
    return header + data


async def test_closed_file_is_measured(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    content = asterisk_wav(f, 3.0, closed=True)
    assert wav_is_closed(f)
    result = await finalize(f, timeout=1)
    assert result.status is RecordingStatus.READY
    assert result.facts["recording_duration"] == 3.0
    assert result.facts["recording_sha256"] == hashlib.sha256(content).hexdigest()
    # A sine of amplitude 8000/32768: peak -12.2 dBFS, RMS 3 dB lower.
    assert abs(result.facts["recording_peak_dbfs"] + 12.25) < 0.1
    assert abs(result.facts["recording_rms_dbfs"] + 15.26) < 0.1
    assert result.facts["recording_bytes"] == len(content)


async def test_unclosed_file_is_kept_and_measured_from_raw_audio(tmp_path: Path) -> None:
    f = tmp_path / "b.wav"
    asterisk_wav(f, 2.5, closed=False)
    assert not wav_is_closed(f)
    result = await finalize(f, timeout=0.3)
    assert result.status is RecordingStatus.UNCLOSED and f.exists()
    assert result.facts["recording_duration"] == 2.5
    assert "did not close the file" in result.facts["recording_error"]


async def test_closed_empty_file_is_removed(tmp_path: Path) -> None:
    f = tmp_path / "c.wav"
    asterisk_wav(f, 0, closed=True)
    result = await finalize(f, timeout=1)
    assert result.status is RecordingStatus.EMPTY and not f.exists()


async def test_missing_file(tmp_path: Path) -> None:
    result = await finalize(tmp_path / "none.wav", timeout=0.2)
    assert result.status is RecordingStatus.MISSING
