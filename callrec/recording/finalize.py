"""Finishing a call's recording: mono or stereo, and why there is no file when there is none.

- **Stereo** recordings (``recording_channels = 2``, or per-direction parts on disk after a
  restart) are merged by ``stereo.finalize_stereo``; mono ones are finalized as before.
- **No empty files.**  A recording with no audio is removed (status ``empty``) and the row says
  why.  The usual why is that the call was never bridged to anyone: nobody answered, or the
  caller hung up in a queue or IVR.  With ``b`` (record only while bridged) MixMonitor then
  writes only a header, or nothing.  ``BridgeWatch`` follows AMI's ``BridgeEnter`` (the first
  time the recorded channel is bridged: ``bridged_at``) and ``DialEnd`` (how the last dial
  attempt ended, e.g. NOANSWER) for the calls callrec follows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from callrec.calls.session import CallSession, RecordingStatus
from callrec.recording.files import RecordingFacts, _in_files, finalize
from callrec.recording.stereo import finalize_stereo, has_parts

if TYPE_CHECKING:
    from callrec.config.settings import Settings
    from callrec.doors.ari import AriDoor

log = logging.getLogger("callrec.recording.files")

# Asterisk's DIALSTATUS words, as ops would say them
_DIAL_WORDS = {
    "NOANSWER": "nobody answered", "BUSY": "the line was busy", "CANCEL": "the caller hung up while it rang",
    "CONGESTION": "the line was congested", "CHANUNAVAIL": "the dialed party was unavailable",
}


class BridgeWatch:
    """AMI BridgeEnter / DialEnd for the channels callrec follows (by uniqueid = ARI channel id)."""

    def __init__(self, door: AriDoor) -> None:
        self.door = door
        self.dial_status = door.service.dial_status  # call id -> the last DialEnd status

    def on_bridge_enter(self, fields: dict[str, str]) -> None:
        call = self.door.calls.get(fields.get("Uniqueid", ""))
        if call is None:
            return
        record = call.session.record
        if record.bridged_at is None:
            record.bridged_at = datetime.now(UTC)
            self.door.service.writer.update(record.id, {"bridged_at": record.bridged_at})

    def on_dial_end(self, fields: dict[str, str]) -> None:
        call = self.door.calls.get(fields.get("Uniqueid", ""))
        if call is not None and fields.get("DialStatus"):
            self.dial_status[call.session.record.id] = fields["DialStatus"][:32]


async def finalize_call_recording(settings: Settings, session: CallSession, file: str,
                                  dial_status: str | None = None) -> RecordingFacts:
    """Wait for Asterisk to close the call's file(s), measure them (merge a stereo pair), and
    explain a missing or empty recording."""
    local = settings.recordings.local_path
    record = session.record
    stereo = record.recording_channels == 2 or await _in_files(has_parts, local, file)
    if stereo:
        result = await finalize_stereo(local, file, settings.recordings.finalize_timeout)
    else:
        result = await finalize(local / file, settings.recordings.finalize_timeout)
        if result.status is RecordingStatus.READY:
            result = RecordingFacts(result.status, {**result.facts, "recording_channels": 1})
    return explain(result, record.bridged_at, session.decision.mixmonitor_options, dial_status)


def explain(result: RecordingFacts, bridged_at: datetime | None, options: str,
            dial_status: str | None) -> RecordingFacts:
    """An empty or absent recording of a call that was never bridged: say so in the row."""
    if result.status not in (RecordingStatus.EMPTY, RecordingStatus.MISSING) or bridged_at is not None:
        return result
    bridged_only = "b" in options.replace("B", "")  # B(n) is the beep, b the bridged-only switch
    if result.status is RecordingStatus.MISSING and not bridged_only:
        return result  # MixMonitor should have written a file: that stays an error
    why = "the call was never bridged to another party"
    if dial_status and dial_status.upper() != "ANSWER":
        word = _DIAL_WORDS.get(dial_status.upper())
        why = f"the call was never answered: {word} (DIALSTATUS={dial_status})" if word else \
            f"the call was never answered (DIALSTATUS={dial_status})"
    how = "recording runs only while bridged (MixMonitor option b), so no audio was recorded" if bridged_only \
        else "no audio was recorded"
    facts: dict[str, Any] = {
        "recording_error": f"no recording: {why}; {how}; no file is kept",
        "recording_duration": 0.0, "recording_bytes": 0,
    }
    return RecordingFacts(RecordingStatus.EMPTY, facts)
