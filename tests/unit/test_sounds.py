"""The recording-notice prompts in sounds/: complete, in the format Asterisk needs, audible, checksummed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
from support import REPO

SOUNDS = REPO / "sounds"
PROMPTS = ("notice", "notice-opt-out", "notice-opt-in", "not-recorded")
LANGUAGES = sorted(p.name for p in SOUNDS.iterdir() if p.is_dir() and not p.name.startswith("."))
WAVS = sorted(p.relative_to(SOUNDS).as_posix() for p in SOUNDS.glob("*/*.wav"))



def _read_sums() -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in (SOUNDS / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, sep, name = line.partition("  ")
        assert sep and len(digest) == 64, f"bad SHA256SUMS line: {line!r}"
        sums[name.removeprefix("*")] = digest
    return sums


def test_languages_present() -> None:
    assert {"en", "ru"} <= set(LANGUAGES)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_prompt_exists_with_its_text(lang: str) -> None:
    for name in PROMPTS:
        wav = SOUNDS / lang / f"{name}.wav"
        txt = SOUNDS / lang / f"{name}.txt"
        assert wav.is_file(), f"missing {wav.relative_to(SOUNDS)}"
        assert txt.is_file(), f"missing {txt.relative_to(SOUNDS)}"
        assert txt.read_text(encoding="utf-8").strip(), f"empty {txt.relative_to(SOUNDS)}"


@pytest.mark.parametrize("rel", WAVS)
def test_wav_format_length_and_level(rel: str) -> None:
    path = SOUNDS / rel
    info = sf.info(str(path))
    assert info.format == "WAV"
    assert info.samplerate == 8000
    assert info.channels == 1
    assert info.subtype == "PCM_16"
    assert 1.5 <= info.duration <= 15.0, f"{rel}: {info.duration:.2f} s"

    data, _ = sf.read(str(path), dtype="float64")
    rms = float(np.sqrt(np.mean(np.square(data))))
    rms_db = 20 * np.log10(max(rms, 1e-12))
    assert rms_db > -35.0, f"{rel}: RMS {rms_db:.1f} dBFS, looks like silence"


def test_sha256sums_match_files() -> None:
    sums = _read_sums()
    assert sorted(sums) == WAVS, "SHA256SUMS must list exactly the WAVs under sounds/"
    for name, digest in sums.items():
        actual = hashlib.sha256((SOUNDS / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name}: checksum differs from SHA256SUMS (run sounds/make_prompts.sh)"


def test_keys_spoken_match_default_config() -> None:
    # The prompts say the key out loud; keep them in step with the configured defaults.
    from callrec.config.settings import NoticeSettings

    defaults = NoticeSettings()
    words = {"1": "один", "9": "девять"}
    en_out = (SOUNDS / "en" / "notice-opt-out.txt").read_text(encoding="utf-8")
    en_in = (SOUNDS / "en" / "notice-opt-in.txt").read_text(encoding="utf-8")
    ru_out = (SOUNDS / "ru" / "notice-opt-out.txt").read_text(encoding="utf-8")
    ru_in = (SOUNDS / "ru" / "notice-opt-in.txt").read_text(encoding="utf-8")
    assert f"press {defaults.opt_out_key} " in en_out
    assert f"press {defaults.opt_in_key} " in en_in
    assert words.get(defaults.opt_out_key, "?") in ru_out
    assert words.get(defaults.opt_in_key, "?") in ru_in
