"""One call's state machine: notice -> consent -> recording -> back to the dialplan -> ended.

Pure logic: inputs are things that happened (with the time they happened), outputs are the
actions an adapter must carry out.  No sockets, no SQL, no clock.  The call-log row lives in
``CallRecord``; every transition notes which of its fields changed so the log writer sends
only those.

States::

    new --start--> notifying --notice over--> awaiting_key --window/key--> starting_recording
                       |  (notice mode: straight to starting_recording)        |
                       |--decline key--> confirming --played--> in_dialplan <--+ (recording or not)
    any state --hangup--> ended
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from callrec.calls.parties import PartyLog
from callrec.calls.policy import Decision
from callrec.recording.status import RecordingStatus
from callrec.store.record import COLUMNS, CallRecord


class State(StrEnum):
    NEW = "new"
    NOTIFYING = "notifying"  # the notice is playing
    AWAITING_KEY = "awaiting_key"  # notice over; the consent key still counts
    CONFIRMING = "confirming"  # telling the caller the call will not be recorded
    STARTING_RECORDING = "starting_recording"
    IN_DIALPLAN = "in_dialplan"  # handed back; recording or not
    ENDED = "ended"


class Consent(StrEnum):
    IMPLIED = "implied"  # the caller went on after the notice (notice mode; opt-out without the key)
    GRANTED = "granted"  # opt-in key pressed
    DECLINED = "declined"  # opt-out key pressed
    NOT_GIVEN = "not_given"  # opt-in mode, no key in time
    ABANDONED = "abandoned"  # hung up before consent was settled
    NOTICE_FAILED = "notice_failed"  # the notice could not be played: never record
    UNAVAILABLE = "unavailable"  # callrec stopped before consent was settled: not recorded
    NOT_ASKED = "not_asked"  # the policy said do not record (no/never, sampled out): no notice, no question


RECORDING_CONSENTS = (Consent.IMPLIED, Consent.GRANTED)

# Hang-up causes (Q.850) as Asterisk names them; ARI's hang-up request carries only the number.
Q850 = {
    0: "Unknown", 1: "Unallocated (unassigned) number", 16: "Normal Clearing", 17: "User busy",
    18: "No user responding", 19: "User alerting, no answer", 21: "Call Rejected", 27: "Destination out of order",
    28: "Invalid number format (addr incomplete)", 31: "Normal, unspecified", 34: "Circuit/channel congestion",
    38: "Network out of order", 41: "Temporary failure", 42: "Switching equipment congestion",
    127: "Interworking, unspecified",
}


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    name: str
    language: str
    media: str  # what Asterisk plays, e.g. "sound:/usr/share/asterisk/sounds/callrec/en/notice"
    file: str  # the file as Asterisk sees it (evidence)
    sha256: str
    duration: float


@dataclass(frozen=True)
class PlayPrompt:
    prompt: Prompt


@dataclass(frozen=True)
class StopPrompt:
    pass


@dataclass(frozen=True)
class StartTimer:
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    pass


@dataclass(frozen=True)
class StartRecording:
    file: str  # relative to the recordings folder: YYYY/MM/DD/<call id>.wav
    options: str


@dataclass(frozen=True)
class HandBack:
    variables: dict[str, str]


@dataclass(frozen=True)
class FinalizeRecording:
    file: str


Action = PlayPrompt | StopPrompt | StartTimer | CancelTimer | StartRecording | HandBack | FinalizeRecording


class CallSession:
    """The state machine for one call.  Every input returns the actions to carry out."""

    def __init__(self, record: CallRecord, decision: Decision, notice: Prompt, *,
                 opt_out_key: str, opt_in_key: str, decision_window: float,
                 confirm: Prompt | None, recordings_dir: str) -> None:
        self.record = record
        self.decision = decision
        self.notice = notice
        self.confirm = confirm  # "not recorded" prompt, or None to skip it
        self.opt_out_key = opt_out_key
        self.opt_in_key = opt_in_key
        self.decision_window = decision_window
        self.recordings_dir = recordings_dir.rstrip("/")
        self.state = State.NEW
        self.keys_maybe_lost = False  # the ARI link was down while a consent key could count
        self.dial_status: str | None = None  # how the call's last Dial() ended (explains an empty recording)
        self.parties: PartyLog | None = None  # who was on the call (callrec.calls.parties), set by the door
        self._changed: set[str] = set(COLUMNS)  # a new row: everything is news
        self._set(
            consent_mode=decision.mode,
            language=decision.language,
            policy_rule=decision.rule,
            record_policy=decision.word,
            policy_reason=decision.reason or None,
            sampled=decision.sampled,
        )
        if decision.record:  # evidence of a notice only when one is played
            self._set(notice_prompt=notice.file, notice_prompt_sha256=notice.sha256,
                      notice_prompt_duration=notice.duration)
        for warning in decision.warnings:
            self.warn(warning)

    @classmethod
    def restore(cls, record: CallRecord, recordings_dir: str) -> CallSession:
        """A call from the log that callrec lost track of (it was stopped or crashed mid-call)."""
        decision = Decision(mode=record.consent_mode, language=record.language or "", prompt="",
                            mixmonitor_options="", rule=record.policy_rule, word=record.record_policy or "yes",
                            reason=record.policy_reason or "", sampled=record.sampled,
                            record=record.consent != Consent.NOT_ASKED)
        notice = Prompt(name="", language=record.language or "", media="", file=record.notice_prompt or "",
                        sha256=record.notice_prompt_sha256 or "", duration=record.notice_prompt_duration or 0.0)
        session = cls(record, decision, notice, opt_out_key="", opt_in_key="", decision_window=0, confirm=None,
                      recordings_dir=recordings_dir)
        session.state = State(record.state)
        session._changed.clear()
        return session

    # -- bookkeeping --

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            if getattr(self.record, name) != value:
                setattr(self.record, name, value)
                self._changed.add(name)

    def _enter(self, state: State) -> None:
        self.state = state
        self._set(state=state.value)

    def set_facts(self, **fields: Any) -> None:
        """Facts learned about the call outside the consent flow (direction, agent, parties' numbers)."""
        self._set(**fields)

    def warn(self, text: str) -> None:
        self.record.warnings.append(text)
        self._changed.add("warnings")

    def take_changes(self) -> dict[str, Any]:
        """The fields changed since the last call, for the call-log writer."""
        changes = {name: getattr(self.record, name) for name in self._changed}
        if "warnings" in changes:
            changes["warnings"] = list(self.record.warnings)
        self._changed.clear()
        return changes

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED

    # -- inputs --

    def start(self) -> list[Action]:
        if self.state is not State.NEW:
            return []
        if not self.decision.record:
            # Not recorded by policy: telling the caller "this call is recorded" would be untrue,
            # and there is nothing to consent to.  Straight back to the dialplan.
            self._set(consent=Consent.NOT_ASKED.value, consent_at=self.record.started_at)
            return self._hand_back(self.record.started_at)
        self._enter(State.NOTIFYING)
        return [PlayPrompt(self.notice)]

    def notice_started(self, now: datetime) -> list[Action]:
        if self.state is State.NOTIFYING and self.record.notice_started_at is None:
            self._set(notice_started_at=now)
        return []

    def notice_finished(self, now: datetime) -> list[Action]:
        """The notice played to its end."""
        if self.state is not State.NOTIFYING:
            return []
        self._set(notice_finished_at=now, notice_completed=True)
        if self.decision.mode == "notice":
            return self._decide(Consent.IMPLIED, now)
        self._enter(State.AWAITING_KEY)
        if self.decision_window <= 0:
            return self.window_expired(now)
        return [StartTimer(self.decision_window)]

    def notice_failed(self, now: datetime, reason: str) -> list[Action]:
        """The notice could not be played (missing prompt, playback error): never record."""
        if self.state is not State.NOTIFYING:
            return []
        self.warn(f"notice failed: {reason}")
        self._set(notice_completed=False, notice_finished_at=now)
        return self._decide(Consent.NOTICE_FAILED, now)

    def dtmf(self, digit: str, now: datetime) -> list[Action]:
        if self.state not in (State.NOTIFYING, State.AWAITING_KEY):
            return []
        if len(self.record.keys_pressed) < 64:  # the first 64 keys are kept, each with its time
            self._set(keys_pressed=self.record.keys_pressed + digit, keys_at=[*self.record.keys_at, now])
        mode = self.decision.mode
        if (mode == "opt-out" and digit == self.opt_out_key) or (mode == "opt-in" and digit == self.opt_in_key):
            actions: list[Action] = []
            if self.state is State.NOTIFYING:
                # Interrupted: the caller heard part of the notice and answered it.
                self._set(notice_finished_at=now, notice_completed=False)
                actions.append(StopPrompt())
            else:
                actions.append(CancelTimer())
            self._set(consent_key=digit)
            consent = Consent.DECLINED if mode == "opt-out" else Consent.GRANTED
            return actions + self._decide(consent, now)
        return []

    def window_expired(self, now: datetime) -> list[Action]:
        if self.state is not State.AWAITING_KEY:
            return []
        consent = Consent.IMPLIED if self.decision.mode == "opt-out" else Consent.NOT_GIVEN
        return self._decide(consent, now)

    def confirm_finished(self, now: datetime) -> list[Action]:
        if self.state is not State.CONFIRMING:
            return []
        return self._hand_back(now)

    def recording_started(self, now: datetime) -> list[Action]:
        if self.state is not State.STARTING_RECORDING:
            return []
        self._set(recording_started_at=now, recording_status=RecordingStatus.RECORDING.value)
        return self._hand_back(now)

    def recording_failed(self, now: datetime, error: str) -> list[Action]:
        if self.state is not State.STARTING_RECORDING:
            return []
        self._set(recording_status=RecordingStatus.FAILED.value, recording_error=error[:500])
        return self._hand_back(now)

    def entered_again(self, now: datetime) -> list[Action]:
        """The dialplan sent a call already handled back to callrec (a transfer, a second Gosub):
        the notice is not played twice; the same answer goes back at once."""
        if self.state is not State.IN_DIALPLAN:
            return []
        return [HandBack(self.variables())]

    def recording_uncertain(self, now: datetime, error: str) -> list[Action]:
        """MixMonitor was asked for but never confirmed: the file is looked for at hang-up."""
        if self.state is not State.STARTING_RECORDING:
            return []
        self._set(recording_error=f"MixMonitor not confirmed: {error}"[:500])
        return self._hand_back(now)

    def handed_back(self, now: datetime) -> list[Action]:
        if self.record.handed_back_at is None and self.state is State.IN_DIALPLAN:
            self._set(handed_back_at=now)
        return []

    def hangup(self, now: datetime, cause: int | None = None, cause_text: str | None = None) -> list[Action]:
        if self.state is State.ENDED:
            # A second source (AMI after ARI) may still know the cause.
            if self.record.hangup_cause is None and cause is not None:
                self._set(hangup_cause=cause, hangup_cause_text=cause_text or Q850.get(cause))
            return []
        actions: list[Action] = []
        if self.state in (State.NEW, State.NOTIFYING, State.AWAITING_KEY):
            if self.state is State.NOTIFYING:
                self._set(notice_completed=False, notice_finished_at=now)
            if self.state is State.AWAITING_KEY:
                actions.append(CancelTimer())
            self._set(consent=Consent.ABANDONED.value, consent_at=now)
        self._set(ended_at=now)
        if cause is not None:
            self._set(hangup_cause=cause, hangup_cause_text=cause_text or Q850.get(cause))
        self._enter(State.ENDED)
        if self.record.recording_status in (RecordingStatus.STARTING, RecordingStatus.RECORDING):
            self._set(recording_status=RecordingStatus.FINALIZING.value)
            assert self.record.recording_path is not None
            actions.append(FinalizeRecording(self.record.recording_path))
        else:
            self._set(finalized_at=now)
        return actions

    def abort(self, now: datetime, reason: str) -> list[Action]:
        """callrec is stopping: hand a call still in the notice flow back, unrecorded, at once."""
        if self.state in (State.IN_DIALPLAN, State.ENDED):
            return []
        if self.state is State.STARTING_RECORDING:
            return []  # MixMonitor's answer is due any moment; the flow finishes by itself
        actions: list[Action] = []
        if self.state in (State.NOTIFYING, State.CONFIRMING):
            actions.append(StopPrompt())
        if self.state is State.NOTIFYING:
            self._set(notice_completed=False, notice_finished_at=now)
        if self.state is State.AWAITING_KEY:
            actions.append(CancelTimer())
        if self.record.consent is None:
            self._set(consent=Consent.UNAVAILABLE.value, consent_at=now)
        self.warn(reason)
        return actions + self._hand_back(now)

    def lost(self, now: datetime, note: str, ended_at: datetime | None = None) -> list[Action]:
        """The call ended (or was taken up as a new call) while callrec was not following it.

        What is unknown stays unknown: no invented hang-up time, no invented consent.
        """
        if self.state is State.ENDED and self.record.recording_status != RecordingStatus.FINALIZING:
            return []
        self.warn(note)
        if self.record.consent is None:
            self._set(consent=Consent.UNAVAILABLE.value, consent_at=now)
        if self.record.ended_at is None and ended_at is not None:
            self._set(ended_at=ended_at)
        self._enter(State.ENDED)
        if self.record.recording_status in (RecordingStatus.STARTING, RecordingStatus.RECORDING,
                                            RecordingStatus.FINALIZING) and self.record.recording_path:
            self._set(recording_status=RecordingStatus.FINALIZING.value)
            return [FinalizeRecording(self.record.recording_path)]
        self._set(finalized_at=now)
        return []

    def recording_finalized(self, now: datetime, status: RecordingStatus, facts: dict[str, Any]) -> None:
        """The finished file was measured (or found missing / empty)."""
        allowed = {"recording_duration", "recording_bytes", "recording_rms_dbfs", "recording_peak_dbfs",
                   "recording_sha256", "recording_error", "recording_channels", "recording_left_rms_dbfs",
                   "recording_left_peak_dbfs", "recording_right_rms_dbfs", "recording_right_peak_dbfs"}
        self._set(recording_status=status.value, finalized_at=now,
                  **{k: v for k, v in facts.items() if k in allowed})

    def prompt_timed_out(self, now: datetime) -> list[Action]:
        """A prompt ran past its time limit (``prompt_time_limit``): stop it and go on."""
        if self.state is State.NOTIFYING:
            return [StopPrompt(), *self.notice_failed(now, "the notice did not finish in time")]
        if self.state is State.CONFIRMING:
            return [StopPrompt(), *self.confirm_finished(now)]
        return []

    def internal_error(self, now: datetime, note: str) -> list[Action]:
        """callrec failed (or was stopped) while following the call: hand it back at once,
        unrecorded unless the recording was already confirmed.  Both doors end such a call the
        same way, so the row and the channel variables agree."""
        if self.state is State.STARTING_RECORDING:
            return self.recording_uncertain(now, note)
        return self.abort(now, note)

    def left_app(self, now: datetime) -> list[Action]:
        """The channel left callrec's app (ARI StasisEnd) without our hand-back: only a hang-up does that."""
        if self.state in (State.IN_DIALPLAN, State.ENDED):
            return []
        return self.hangup(now)

    def linkedid_known(self, linkedid: str) -> list[Action]:
        """Asterisk's linkedid (ties the call's channels together), learned after the start."""
        if linkedid and self.record.linkedid is None:
            self._set(linkedid=linkedid)
        return []

    def bridged(self, now: datetime) -> list[Action]:
        """The recorded channel was bridged to another party (the first time counts)."""
        if self.record.bridged_at is None:
            self._set(bridged_at=now)
        return []

    def dial_ended(self, status: str) -> list[Action]:
        """How the recorded channel's last Dial() ended (DIALSTATUS), for a recording that stays empty."""
        if status:
            self.dial_status = status[:32]
        return []

    # -- transitions --

    def events_lost(self) -> None:
        """ARI was disconnected for a while: keys pressed meanwhile are unknown."""
        if self.state in (State.NOTIFYING, State.AWAITING_KEY):
            self.keys_maybe_lost = True

    def _decide(self, consent: Consent, now: datetime) -> list[Action]:
        if consent is Consent.IMPLIED and self.decision.mode == "opt-out" and self.keys_maybe_lost:
            # A "don't record" key may have been pressed while ARI was down: never guess yes.
            self.warn("the opt-out key could have been missed during an ARI outage; not recorded")
            consent = Consent.UNAVAILABLE
        self._set(consent=consent.value, consent_at=now)
        if consent in RECORDING_CONSENTS:
            self._enter(State.STARTING_RECORDING)
            file = recording_file_name(self.record.id, self.record.started_at)
            self._set(recording_path=file, recording_status=RecordingStatus.STARTING.value,
                      recording_channels=2 if self.decision.stereo else 1)
            return [StartRecording(file, self.decision.mixmonitor_options)]
        if self.confirm is not None and consent in (Consent.DECLINED, Consent.NOT_GIVEN):
            self._enter(State.CONFIRMING)
            return [PlayPrompt(self.confirm)]
        return self._hand_back(now)

    def _hand_back(self, now: datetime) -> list[Action]:
        self._enter(State.IN_DIALPLAN)
        return [HandBack(self.variables())]

    def variables(self) -> dict[str, str]:
        """The channel variables the dialplan gets back."""
        recording = ""
        if self.record.recording_status == RecordingStatus.RECORDING and self.record.recording_path:
            recording = f"{self.recordings_dir}/{self.record.recording_path}"
        return {
            "CALLREC_CALL_ID": self.record.id,
            "CALLREC_CONSENT": self.record.consent or "",
            "CALLREC_RECORDING": recording,
            "CALLREC_POLICY": self.record.record_policy or "",
            "CALLREC_REASON": self.record.policy_reason or "",
        }


def prompt_time_limit(prompt: Prompt, cap: float) -> float:
    """How long a prompt may play before the call goes on without it: twice its length plus a
    margin (a busy Asterisk starts late), never under 10 s, never over ``notice.max_notice_seconds``."""
    return min(max(prompt.duration * 2 + 5, 10.0), cap)


def recording_file_name(call_id: str, started_at: datetime) -> str:
    """``YYYY/MM/DD/<call id>.wav`` (UTC date), relative to the recordings folder."""
    return f"{started_at.astimezone(UTC):%Y/%m/%d}/{call_id}.wav"

