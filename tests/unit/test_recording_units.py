"""Recording mechanics without Asterisk: the stereo merge and its facts, why a recording is
absent, the new config keys and the policy's stereo switch.  (End to end: test_recording_e2e.)"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile
from support.settings import SECRETS

from callrec.calls.policy import CallFacts, Decision, decide
from callrec.calls.session import CallSession, Prompt, RecordingStatus, StartRecording
from callrec.config.settings import (
    ConfigError,
    NoticeSettings,
    PolicyRule,
    PolicySettings,
    RecordingSettings,
    parse_settings,
)
from callrec.recording.control import PauseInterval, RecordingControl
from callrec.recording.files import RecordingFacts, wav_is_closed
from callrec.recording.finalize import explain
from callrec.recording.stereo import finalize_stereo, measure_stereo, merge, mixmonitor_args, part_names
from callrec.store.record import CallRecord

RATE = 8000


def asterisk_wav(path: Path, samples: np.ndarray, closed: bool = True) -> None:
    """A mono WAV as Asterisk's format_wav writes it: sizes in the header only once closed."""
    data = samples.astype("<i2").tobytes()
    riff, size = (36 + len(data), len(data)) if closed else (0, 0)
    header = (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
              + b"data" + struct.pack("<I", size))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data)


def sine(seconds: float, amplitude: int = 8000, hz: float = 440) -> np.ndarray:
    t = np.arange(int(RATE * seconds))
    return (amplitude * np.sin(2 * np.pi * hz * t / RATE)).astype(np.int16)


def test_part_names_and_mixmonitor_arguments() -> None:
    assert part_names("2026/11/28/abc.wav") == ("2026/11/28/abc-rx.wav", "2026/11/28/abc-tx.wav")
    assert mixmonitor_args("/rec/", "2026/11/28/abc.wav", "b") == (
        "", "br(/rec/2026/11/28/abc-rx.wav)t(/rec/2026/11/28/abc-tx.wav)")


def test_merge_is_lossless_pads_the_shorter_part_and_measures_each_channel(tmp_path: Path) -> None:
    left, right = sine(2.0, 8000), sine(1.5, 800, 1000)
    asterisk_wav(tmp_path / "rx.wav", left)
    asterisk_wav(tmp_path / "tx.wav", right)
    out = tmp_path / "out.wav"
    merge(tmp_path / "rx.wav", tmp_path / "tx.wav", out)
    assert wav_is_closed(out) and not (tmp_path / "out.wav.part").exists()
    data, rate = soundfile.read(str(out), dtype="int16")
    assert rate == RATE and data.shape == (len(left), 2)
    assert np.array_equal(data[:, 0], left)
    assert np.array_equal(data[: len(right), 1], right) and not data[len(right):, 1].any()
    facts = measure_stereo(out)
    assert facts["recording_channels"] == 2 and facts["recording_duration"] == 2.0
    assert facts["recording_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert facts["recording_bytes"] == out.stat().st_size
    # Sine of amplitude 8000/32768 over its whole length: peak -12.25 dBFS, RMS 3 dB lower.
    assert facts["recording_left_peak_dbfs"] == pytest.approx(-12.25, abs=0.05)
    assert facts["recording_left_rms_dbfs"] == pytest.approx(-15.26, abs=0.05)
    # 800/32768 for 1.5 s of 2 s: 20 dB lower, and 10*log10(0.75) lower again for the padding.
    assert facts["recording_right_rms_dbfs"] == pytest.approx(-35.26 + 10 * np.log10(0.75), abs=0.05)
    assert facts["recording_peak_dbfs"] == facts["recording_left_peak_dbfs"]


def test_merge_with_one_part_missing_is_silence_on_that_side(tmp_path: Path) -> None:
    asterisk_wav(tmp_path / "tx.wav", sine(1.0))
    merge(None, tmp_path / "tx.wav", tmp_path / "out.wav")
    facts = measure_stereo(tmp_path / "out.wav")
    assert facts["recording_left_rms_dbfs"] == -120.0 and facts["recording_left_peak_dbfs"] == -120.0
    assert facts["recording_right_rms_dbfs"] > -20


async def test_finalize_stereo_ready_removes_the_parts(tmp_path: Path) -> None:
    file = "2026/11/28/call.wav"
    rx, tx = (tmp_path / n for n in part_names(file))
    asterisk_wav(rx, sine(1.0))
    asterisk_wav(tx, np.zeros(RATE, dtype=np.int16))
    result = await finalize_stereo(tmp_path, file, timeout=2)
    assert result.status is RecordingStatus.READY
    assert not rx.exists() and not tx.exists() and (tmp_path / file).exists()
    assert result.facts["recording_right_rms_dbfs"] == -120.0 and result.facts["recording_duration"] == 1.0


async def test_finalize_stereo_empty_leaves_no_file(tmp_path: Path) -> None:
    file = "2026/11/28/call.wav"
    for name in part_names(file):
        asterisk_wav(tmp_path / name, np.zeros(0, dtype=np.int16))  # header only, as with b and no bridge
    result = await finalize_stereo(tmp_path, file, timeout=2)
    assert result.status is RecordingStatus.EMPTY
    assert not list(tmp_path.rglob("*.wav*"))


async def test_finalize_stereo_missing_and_unclosed(tmp_path: Path) -> None:
    assert (await finalize_stereo(tmp_path, "x/none.wav", timeout=0.2)).status is RecordingStatus.MISSING
    file = "2026/11/28/crash.wav"
    rx, tx = (tmp_path / n for n in part_names(file))
    asterisk_wav(rx, sine(1.0), closed=False)  # Asterisk never closed it
    asterisk_wav(tx, sine(1.0), closed=False)
    result = await finalize_stereo(tmp_path, file, timeout=0.3)
    assert result.status is RecordingStatus.UNCLOSED and rx.exists() and tx.exists()
    assert not (tmp_path / file).exists() and "not merged" in result.facts["recording_error"]
    assert result.facts["recording_duration"] == 1.0


def test_explain_says_why_there_is_no_recording() -> None:
    empty = RecordingFacts(RecordingStatus.EMPTY, {"recording_error": "no audio was recorded"})
    missing = RecordingFacts(RecordingStatus.MISSING, {"recording_error": "Asterisk wrote no file"})
    now = datetime.now(UTC)
    unanswered = explain(empty, None, "b", "NOANSWER")
    assert unanswered.status is RecordingStatus.EMPTY
    assert unanswered.facts["recording_error"] == (
        "no recording: the call was never answered: nobody answered (DIALSTATUS=NOANSWER); recording runs only "
        "while bridged (MixMonitor option b), so no audio was recorded; no file is kept")
    never = explain(missing, None, "bB(15)", None)  # with b, no file at all is not an error
    assert never.status is RecordingStatus.EMPTY and "never bridged" in never.facts["recording_error"]
    assert explain(missing, None, "B(15)", None) is missing  # without b a missing file stays an error
    assert "never bridged" in explain(empty, None, "", "ANSWER").facts["recording_error"]
    assert explain(empty, now, "b", None) is empty  # bridged: the plain "no audio" stands
    ready = RecordingFacts(RecordingStatus.READY, {})
    assert explain(ready, None, "b", "NOANSWER") is ready


def test_config_keys_and_policy_stereo() -> None:
    s = parse_settings({"recordings": {"stereo": True, "pause_dtmf": False}}, SECRETS)
    assert s.recordings.stereo is True and s.recordings.pause_dtmf is False
    assert parse_settings({}, {**SECRETS, "CALLREC_RECORDINGS_STEREO": "yes"}).recordings.stereo is True
    with pytest.raises(ConfigError, match=r"^recordings\.stereo: expected true or false, got 'maybe'$"):
        parse_settings({"recordings": {"stereo": "maybe"}}, SECRETS)
    with pytest.raises(ConfigError, match=r"^policy\.rules\[0\]\.stereo: expected true or false"):
        parse_settings({"policy": {"rules": [{"did": "1*", "stereo": 3}]}}, SECRETS)
    rules = parse_settings({"policy": {"rules": [{"name": "mono", "did": "1*", "stereo": False},
                                                  {"name": "other", "did": "2*"}]}}, SECRETS).policy
    assert rules.rules[0].stereo is False and rules.rules[1].stereo is None
    prompts = {"en": {"notice", "notice-opt-out", "notice-opt-in"}}
    pol = PolicySettings(rules=(PolicyRule(name="mono", did="1*", stereo=False), PolicyRule(name="x", did="2*")))
    stereo_default = RecordingSettings(stereo=True)
    assert decide(pol, NoticeSettings(), stereo_default, CallFacts(did="100"), prompts).stereo is False
    assert decide(pol, NoticeSettings(), stereo_default, CallFacts(did="200"), prompts).stereo is True
    assert decide(pol, NoticeSettings(), RecordingSettings(), CallFacts(did="300"), prompts).stereo is False


def test_a_stereo_decision_marks_the_row_two_channels() -> None:
    record = CallRecord(id="11111111-2222-3333-4444-555555555555", door="ari", uniqueid="1.1",
                        started_at=datetime(2026, 11, 28, tzinfo=UTC), channel="PJSIP/a-1")
    decision = Decision(mode="notice", language="en", prompt="notice", mixmonitor_options="", rule=None, stereo=True)
    notice = Prompt("notice", "en", "sound:/p/en/notice", "/p/en/notice.wav", "ab" * 32, 1.0)
    s = CallSession(record, decision, notice, opt_out_key="9", opt_in_key="1", decision_window=0, confirm=None,
                    recordings_dir="/rec")
    s.start()
    assert s.notice_finished(datetime(2026, 11, 28, 0, 0, 5, tzinfo=UTC)) == [
        StartRecording(f"2026/11/28/{record.id}.wav", "")]
    assert s.take_changes()["recording_channels"] == 2


def test_user_events_other_than_ours_or_with_the_key_switched_off_do_nothing() -> None:
    control = RecordingControl(ami=None, db=None, dtmf=False)  # type: ignore[arg-type]
    control.on_user_event({"Event": "UserEvent", "UserEvent": "CallrecRecording", "CallID": "x"})
    control.dtmf = True
    control.on_user_event({"Event": "UserEvent", "UserEvent": "SomethingElse"})
    assert not control._tasks


def test_pause_interval_as_json() -> None:
    at = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)
    i = PauseInterval("c", 1, at, "alice", "api")
    assert i.open and i.as_dict() == {"call_id": "c", "seq": 1, "paused_at": "2026-11-28T01:02:03+00:00",
                                      "paused_by": "alice", "pause_source": "api", "resumed_at": None,
                                      "resumed_by": None, "resume_source": None}
