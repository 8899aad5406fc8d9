"""The one-read hash-and-level scan of a 16-bit PCM WAV gives exactly the facts of the libsndfile way."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.recording import files, stereo


def write(path: Path, frames: int, channels: int, seed: int, subtype: str = "PCM_16") -> None:
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal((frames, channels)) * 9000).clip(-32768, 32767).astype(np.int16)
    if frames > 10:
        audio[7, 0] = -32768  # full scale, negative: the peak an int16 abs() would get wrong
    soundfile.write(str(path), audio, 8000, subtype=subtype)


@pytest.mark.parametrize("frames", [0, 1, 5, 8000 * 3 + 1, (files.SCAN_BLOCK // 2) + 3])
def test_mono_facts_equal_the_libsndfile_way(tmp_path: Path, frames: int) -> None:
    path = tmp_path / "m.wav"
    write(path, frames, 1, frames)
    assert files.scan_pcm16(path) is not None
    assert files.measure(path) == files._measure_open(path, soundfile.SoundFile(str(path)))
    assert files.measure(path)["recording_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("frames", [1, 8000 * 5 + 3, (files.SCAN_BLOCK // 4) + 1])
def test_stereo_facts_equal_the_libsndfile_way(tmp_path: Path, frames: int, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.wav"
    write(path, frames, 2, frames)
    fast = stereo.measure_stereo(path)
    monkeypatch.setattr(stereo, "scan_pcm16", lambda p: None)
    assert fast == stereo.measure_stereo(path)
    assert fast["recording_channels"] == 2 and (frames < 10 or fast["recording_left_peak_dbfs"] == 0.0)


def test_a_chunk_after_the_samples_is_hashed_not_measured(tmp_path: Path) -> None:
    path = tmp_path / "m.wav"
    write(path, 8001, 1, 3)
    data = bytearray(path.read_bytes())
    data += b"LIST" + (4).to_bytes(4, "little") + b"abcd"
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    facts = files.measure(path)
    assert facts["recording_duration"] == 1.0 and facts["recording_bytes"] == len(data)
    assert facts["recording_sha256"] == hashlib.sha256(data).hexdigest()
    assert facts == files._measure_open(path, soundfile.SoundFile(str(path)))


def test_other_formats_go_the_libsndfile_way(tmp_path: Path) -> None:
    path = tmp_path / "f.wav"
    write(path, 800, 1, 4, subtype="FLOAT")
    assert files.scan_pcm16(path) is None
    assert files.measure(path)["recording_duration"] == 0.1
    cut = tmp_path / "cut.wav"
    write(cut, 800, 1, 5)
    cut.write_bytes(cut.read_bytes()[:-100])  # the header promises more than the file holds
    assert files.scan_pcm16(cut) is None
