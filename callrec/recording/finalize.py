"""Finishing a call's recording: mono or stereo, and why there is no file when there is none.

- **Stereo** recordings (``recording_channels = 2``, or per-direction parts on disk after a
  restart) are merged by ``stereo.finalize_stereo``; mono ones are finalized as before.
- **No empty files.**  A recording with no audio is removed (status ``empty``) and the row says
  why.  The usual why is that the call was never bridged to anyone: nobody answered, or the
  caller hung up in a queue or IVR.  With ``b`` (record only while bridged) MixMonitor then
  writes only a header, or nothing.  The call's session knows when it was first bridged
  (``bridged_at``) and how its last dial attempt ended (DIALSTATUS, e.g. NOANSWER): the doors
  tell it from ARI's ``Dial`` and AMI's ``BridgeEnter`` / ``DialEnd``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from callrec.config.settings import Settings
from callrec.recording.files import OutsideFolder, RecordingFacts, finalize, in_files, recording_path
from callrec.recording.status import RecordingStatus
from callrec.recording.stereo import finalize_stereo, has_parts

log = logging.getLogger("callrec.recording.files")

# Asterisk's DIALSTATUS words, as ops would say them
_DIAL_WORDS = {
    "NOANSWER": "nobody answered", "BUSY": "the line was busy", "CANCEL": "the caller hung up while it rang",
    "CONGESTION": "the line was congested", "CHANUNAVAIL": "the dialed party was unavailable",
}


async def finalize_call_recording(settings: Settings, file: str, *, channels: int | None,
                                  why_empty: Callable[[], tuple[datetime | None, str, str | None]]) -> RecordingFacts:
    """Wait for Asterisk to close the call's file(s), measure them (merge a stereo pair), and
    explain a missing or empty recording.  ``why_empty`` gives (bridged_at, MixMonitor options,
    dial status) and is asked after the wait: AMI's DialEnd may arrive after the hang-up."""
    local = settings.recordings.local_path
    path = None if channels == 2 else await in_files(_mono_path, local, file)  # one hop for both checks
    if path is None:
        result = await finalize_stereo(local, file, settings.recordings.finalize_timeout)
    elif isinstance(path, OutsideFolder):
        return RecordingFacts(RecordingStatus.FAILED, {"recording_error": str(path)[:500]})
    else:
        result = await finalize(path, settings.recordings.finalize_timeout)
        if result.status is RecordingStatus.READY:
            result = RecordingFacts(result.status, {**result.facts, "recording_channels": 1})
    return explain(result, *why_empty())


def _mono_path(local: Path, file: str) -> Path | OutsideFolder | None:
    """The mono recording's path (or why it is refused); None when per-direction parts are on disk
    (a stereo recording after a restart).  Blocking."""
    if has_parts(local, file):
        return None
    try:
        return recording_path(local, file)
    except OutsideFolder as exc:
        return exc


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
