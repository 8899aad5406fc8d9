"""One ``calls`` row as callrec knows it: the shape the call log stores and the session fills in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class CallRecord:
    """The fields of one ``calls`` row callrec knows.  Names match the SQL columns."""

    id: str
    door: str
    uniqueid: str
    started_at: datetime
    channel: str = ""
    linkedid: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    called_number: str | None = None
    context: str | None = None
    direction: str = "inbound"
    channel_language: str | None = None
    language: str | None = None
    policy_rule: str | None = None
    consent_mode: str = "notice"
    state: str = "new"  # calls.session.State
    consent: str | None = None
    consent_key: str | None = None
    keys_pressed: str = ""
    keys_at: list[datetime] = field(default_factory=list)  # keys_at[i]: when keys_pressed[i] came (migration 022)
    notice_prompt: str | None = None
    notice_prompt_sha256: str | None = None
    notice_prompt_duration: float | None = None
    notice_completed: bool | None = None
    notice_started_at: datetime | None = None
    notice_finished_at: datetime | None = None
    consent_at: datetime | None = None
    recording_started_at: datetime | None = None
    handed_back_at: datetime | None = None
    ended_at: datetime | None = None
    finalized_at: datetime | None = None
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    recording_status: str = "none"  # recording.status.RecordingStatus
    recording_path: str | None = None
    recording_error: str | None = None
    recording_duration: float | None = None
    recording_bytes: int | None = None
    recording_rms_dbfs: float | None = None
    recording_peak_dbfs: float | None = None
    recording_sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    record_policy: str | None = None  # the policy word that decided: force | yes | no | never
    policy_reason: str | None = None  # why, in one line (also CALLREC_REASON)
    sampled: bool | None = None  # QA sampling: kept / sampled out / not sampled (NULL)
    # Recording mechanics (recording_control, stereo, bridged-only; migration 003).
    recording_channels: int | None = None  # 1 mono mix, 2 stereo (left: this channel, right: the other side)
    recording_left_rms_dbfs: float | None = None
    recording_left_peak_dbfs: float | None = None
    recording_right_rms_dbfs: float | None = None
    recording_right_peak_dbfs: float | None = None
    bridged_at: datetime | None = None  # first bridged to another party; None: never
    agent: str | None = None  # the agent's extension (migration 002)

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


COLUMNS = tuple(f.name for f in dataclasses.fields(CallRecord))
