"""The per-call state machine, without Asterisk: every consent path and its evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callrec.calls.policy import Decision
from callrec.calls.session import (
    CallSession,
    CancelTimer,
    FinalizeRecording,
    HandBack,
    PlayPrompt,
    Prompt,
    RecordingStatus,
    StartRecording,
    StartTimer,
    State,
    StopPrompt,
)
from callrec.store.record import CallRecord

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def prompt(name: str) -> Prompt:
    return Prompt(name, "en", f"sound:/p/en/{name}", f"/p/en/{name}.wav", "ab" * 32, 4.0)


def make(mode: str, confirm: bool = True, window: float = 5.0) -> CallSession:
    record = CallRecord(id="11111111-2222-3333-4444-555555555555", door="ari", uniqueid="1.1", started_at=T0,
                        channel="PJSIP/a-1")
    decision = Decision(mode=mode, language="en", prompt=f"notice-{mode}", mixmonitor_options="b", rule=None)
    return CallSession(record, decision, prompt(f"notice-{mode}"), opt_out_key="9", opt_in_key="1",
                       decision_window=window, confirm=prompt("not-recorded") if confirm else None,
                       recordings_dir="/rec/")


def test_notice_mode_implied_consent_records_and_hands_back() -> None:
    s = make("notice")
    assert s.start() == [PlayPrompt(s.notice)]
    assert s.notice_started(at(0.05)) == []
    actions = s.notice_finished(at(4.1))
    assert actions == [StartRecording("2026/11/27/11111111-2222-3333-4444-555555555555.wav", "b")]
    assert s.record.consent == "implied" and s.record.notice_completed is True
    back = s.recording_started(at(4.2))
    assert back == [HandBack({"CALLREC_CALL_ID": s.record.id, "CALLREC_CONSENT": "implied",
                              "CALLREC_RECORDING": f"/rec/2026/11/27/{s.record.id}.wav",
                              "CALLREC_POLICY": "yes", "CALLREC_REASON": ""})]
    assert s.state is State.IN_DIALPLAN
    assert s.hangup(at(30), 16, "Normal Clearing") == [FinalizeRecording(s.record.recording_path)]
    assert s.record.recording_status == "finalizing" and s.record.finalized_at is None
    s.recording_finalized(at(31), RecordingStatus.READY, {"recording_duration": 25.8, "bogus": 1})
    assert s.record.recording_duration == 25.8 and s.record.finalized_at == at(31)


def test_digits_are_ignored_in_notice_mode_but_kept_as_evidence() -> None:
    s = make("notice")
    s.start()
    assert s.dtmf("9", at(1)) == []
    assert s.record.keys_pressed == "9" and s.record.consent is None and s.state is State.NOTIFYING


def test_each_key_is_kept_with_its_own_time_up_to_64() -> None:
    s = make("opt-in")
    s.start()
    s.notice_started(at(0.1))
    assert s.take_changes()  # the new row
    assert s.dtmf("5", at(1.25)) == []
    assert s.take_changes() == {"keys_pressed": "5", "keys_at": [at(1.25)]}  # both go to the writer together
    s.notice_finished(at(4))
    s.dtmf("1", at(6.5))
    assert (s.record.keys_pressed, s.record.keys_at) == ("51", [at(1.25), at(6.5)])
    assert s.record.consent_at == at(6.5)
    # Keys after the decision are not the notice's: nothing changes.
    assert s.dtmf("7", at(7)) == [] and s.record.keys_at == [at(1.25), at(6.5)]
    # A caller who keeps pressing: the first 64 keys, each with its time, and the lists stay paired.
    s = make("notice")
    s.start()
    for i in range(70):
        s.dtmf("2", at(i / 10))
    assert len(s.record.keys_pressed) == 64 and s.record.keys_at == [at(i / 10) for i in range(64)]


def test_opt_out_key_during_notice_declines_stops_notice_and_confirms() -> None:
    s = make("opt-out")
    s.start()
    s.notice_started(at(0.1))
    actions = s.dtmf("9", at(2))
    assert actions == [StopPrompt(), PlayPrompt(s.confirm)]
    r = s.record
    assert (r.consent, r.consent_key, r.notice_completed, r.notice_finished_at) == ("declined", "9", False, at(2))
    assert r.recording_status == "none" and s.state is State.CONFIRMING
    # The notice's own PlaybackFinished for the stopped prompt changes nothing.
    assert s.notice_finished(at(2.1)) == []
    assert s.confirm_finished(at(4)) == [HandBack({"CALLREC_CALL_ID": r.id, "CALLREC_CONSENT": "declined",
                                                   "CALLREC_RECORDING": "", "CALLREC_POLICY": "yes",
                                                   "CALLREC_REASON": ""})]


def test_opt_out_key_in_window_after_notice_declines() -> None:
    s = make("opt-out", confirm=False)
    s.start()
    assert s.notice_finished(at(4)) == [StartTimer(5.0)]
    actions = s.dtmf("9", at(6))
    assert actions[0] == CancelTimer() and isinstance(actions[1], HandBack)
    assert s.record.consent == "declined"


def test_opt_out_without_key_is_implied_consent_after_window() -> None:
    s = make("opt-out")
    s.start()
    s.notice_finished(at(4))
    assert s.dtmf("5", at(5)) == []  # a wrong key is not a decision
    actions = s.window_expired(at(9))
    assert isinstance(actions[0], StartRecording)
    assert (s.record.consent, s.record.consent_key, s.record.keys_pressed) == ("implied", None, "5")


def test_opt_in_key_grants_consent() -> None:
    s = make("opt-in")
    s.start()
    actions = s.dtmf("1", at(3))
    assert actions[0] == StopPrompt() and isinstance(actions[1], StartRecording)
    assert (s.record.consent, s.record.consent_key) == ("granted", "1")


def test_opt_in_without_key_is_not_recorded() -> None:
    s = make("opt-in")
    s.start()
    s.notice_finished(at(4))
    assert s.window_expired(at(9)) == [PlayPrompt(s.confirm)]
    assert s.record.consent == "not_given" and s.record.recording_path is None


def test_the_opt_out_key_means_nothing_in_opt_in_mode() -> None:
    s = make("opt-in")
    s.start()
    assert s.dtmf("9", at(1)) == []
    assert s.record.consent is None


def test_hangup_during_notice_is_abandoned_and_never_recorded() -> None:
    s = make("notice")
    s.start()
    s.notice_started(at(0.1))
    assert s.hangup(at(2), 16, "Normal Clearing") == []
    r = s.record
    assert (r.consent, r.notice_completed, r.recording_status, r.state) == ("abandoned", False, "none", "ended")
    assert r.finalized_at == at(2)
    # Late events after the hang-up change nothing.
    assert s.notice_finished(at(3)) == [] and s.dtmf("9", at(3)) == [] and s.window_expired(at(9)) == []
    assert r.consent == "abandoned"


def test_hangup_in_window_cancels_timer() -> None:
    s = make("opt-in")
    s.start()
    s.notice_finished(at(4))
    assert s.hangup(at(5)) == [CancelTimer()]
    assert s.record.consent == "abandoned"


def test_notice_failure_never_records() -> None:
    s = make("notice")
    s.start()
    actions = s.notice_failed(at(0.2), "prompt missing")
    assert actions == [HandBack({"CALLREC_CALL_ID": s.record.id, "CALLREC_CONSENT": "notice_failed",
                                 "CALLREC_RECORDING": "", "CALLREC_POLICY": "yes", "CALLREC_REASON": ""})]
    assert "notice failed: prompt missing" in s.record.warnings


def test_mixmonitor_failure_hands_back_without_recording() -> None:
    s = make("notice")
    s.start()
    s.notice_finished(at(4))
    actions = s.recording_failed(at(4.1), "AMI not connected")
    assert actions[0].variables["CALLREC_RECORDING"] == ""
    assert (s.record.recording_status, s.record.recording_error) == ("failed", "AMI not connected")
    assert s.hangup(at(9)) == []  # nothing to finalize


def test_changes_are_reported_once() -> None:
    s = make("notice")
    first = s.take_changes()
    assert first["consent_mode"] == "notice" and first["notice_prompt_sha256"] == "ab" * 32
    s.start()
    assert s.take_changes() == {"state": "notifying"}
    assert s.take_changes() == {}
    s.notice_started(at(0.1))
    s.notice_started(at(0.5))  # a duplicate event does not move the evidence
    assert s.take_changes() == {"notice_started_at": at(0.1)}


@pytest.mark.parametrize("window", [0.0])
def test_zero_window_decides_when_the_notice_ends(window: float) -> None:
    s = make("opt-out", window=window)
    s.start()
    actions = s.notice_finished(at(4))
    assert isinstance(actions[0], StartRecording) and s.record.consent == "implied"


def test_a_second_pass_through_callrec_does_not_replay_the_notice() -> None:
    s = make("notice")
    assert s.entered_again(at(0)) == []  # not handed back yet: nothing to repeat
    s.start()
    s.notice_finished(at(4))
    first = s.recording_started(at(4.1))
    again = s.entered_again(at(60))
    assert again == first and s.state is State.IN_DIALPLAN


def test_recording_folder_is_the_utc_date() -> None:
    from datetime import timezone

    from callrec.calls.session import recording_file_name

    moscow = timezone(timedelta(hours=3))
    started = datetime(2026, 1, 1, 1, 30, tzinfo=moscow)  # still 31 December in UTC
    assert recording_file_name("x", started) == "2025/12/31/x.wav"


def test_an_ari_outage_in_opt_out_mode_never_guesses_consent() -> None:
    s = make("opt-out")
    s.start()
    s.events_lost()  # the websocket was down during the notice: a 9 may have been missed
    s.notice_finished(at(4))
    actions = s.window_expired(at(9))
    assert s.record.consent == "unavailable" and not any(isinstance(a, StartRecording) for a in actions)
    assert any("could have been missed" in w for w in s.record.warnings)


def test_an_ari_outage_changes_nothing_in_notice_mode() -> None:
    s = make("notice")
    s.start()
    s.events_lost()
    assert isinstance(s.notice_finished(at(4))[0], StartRecording) and s.record.consent == "implied"


def test_abort_and_lost() -> None:
    s = make("opt-in")
    s.start()
    actions = s.abort(at(2), "stopping")
    assert actions[0] == StopPrompt() and isinstance(actions[-1], HandBack)
    assert (s.record.consent, s.record.notice_completed, s.state) == ("unavailable", False, State.IN_DIALPLAN)
    s2 = make("notice")
    s2.start()
    s2.notice_finished(at(4))
    s2.recording_started(at(4.1))
    assert s2.lost(at(100), "crash", ended_at=at(50)) == [FinalizeRecording(s2.record.recording_path)]
    assert (s2.record.ended_at, s2.record.consent) == (at(50), "implied")


def test_unconfirmed_mixmonitor_is_looked_for_at_hangup() -> None:
    s = make("notice")
    s.start()
    s.notice_finished(at(4))
    back = s.recording_uncertain(at(7), "no answer within 3s")
    assert back[0].variables["CALLREC_RECORDING"] == ""  # the dialplan is told: not recorded
    assert s.hangup(at(20), 16) == [FinalizeRecording(s.record.recording_path)]
    assert s.record.hangup_cause_text == "Normal Clearing"  # named even when ARI gave only the number


# -- what the doors used to decide themselves: now session inputs ------------------------------


def test_a_prompt_past_its_time_limit_fails_the_notice_or_ends_the_confirmation() -> None:
    s = make("opt-out")
    s.start()
    actions = s.prompt_timed_out(at(20))
    assert actions[0] == StopPrompt() and isinstance(actions[-1], HandBack)
    assert s.record.consent == "notice_failed" and s.record.notice_completed is False
    assert "notice failed: the notice did not finish in time" in s.record.warnings
    c = make("opt-out")
    c.start()
    c.dtmf("9", at(1))  # declined: the "not recorded" confirmation plays
    assert c.state is State.CONFIRMING
    actions = c.prompt_timed_out(at(20))
    assert actions[0] == StopPrompt() and isinstance(actions[-1], HandBack) and c.record.consent == "declined"
    assert c.prompt_timed_out(at(21)) == []  # over: a late watchdog changes nothing


def test_an_internal_error_hands_the_call_back_unrecorded_and_says_so() -> None:
    s = make("opt-in")
    s.start()
    actions = s.internal_error(at(2), "internal error during the notice (boom); the call went on unrecorded")
    assert actions[0] == StopPrompt() and isinstance(actions[-1], HandBack)
    assert actions[-1].variables["CALLREC_CONSENT"] == "unavailable" == s.record.consent
    assert s.state is State.IN_DIALPLAN and s.record.warnings[-1].startswith("internal error")
    # Once handed back, a failure changes nothing the dialplan already has.
    assert s.internal_error(at(3), "again") == []


def test_an_internal_error_while_mixmonitor_starts_keeps_the_consent_and_marks_the_recording() -> None:
    s = make("notice")
    s.start()
    s.notice_finished(at(4))
    assert s.state is State.STARTING_RECORDING
    actions = s.internal_error(at(4.1), "internal error")
    assert isinstance(actions[-1], HandBack) and actions[-1].variables["CALLREC_RECORDING"] == ""
    assert s.record.consent == "implied" and "MixMonitor not confirmed" in (s.record.recording_error or "")


def test_leaving_the_app_without_the_hand_back_is_a_hang_up() -> None:
    s = make("notice")
    s.start()
    assert s.left_app(at(1)) == [] and s.state is State.ENDED and s.record.consent == "abandoned"
    t = make("notice")
    t.start()
    t.notice_finished(at(4))
    t.recording_started(at(4.1))
    assert t.left_app(at(5)) == [] and t.state is State.IN_DIALPLAN  # our own hand-back


def test_linkedid_bridged_and_dial_status_are_facts_the_session_keeps() -> None:
    s = make("notice")
    s.take_changes()
    assert s.linkedid_known("1700000000.7") == [] and s.linkedid_known("other") == []
    assert s.bridged(at(3)) == [] and s.bridged(at(9)) == []
    assert s.dial_ended("NOANSWER") == [] and s.dial_ended("") == []
    changes = s.take_changes()
    assert changes == {"linkedid": "1700000000.7", "bridged_at": at(3)}
    assert s.dial_status == "NOANSWER"
