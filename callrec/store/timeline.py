"""A call's timeline, from the evidence the call log already holds (no new recording of events).

Pure: rows in, events out.  Each event has its wall-clock time (``at``), its offset from the call's
start (``call_ms``) and, when it falls inside the recording, its offset in the audio (``audio_ms``),
which is where the console's player seeks.  Events: the call starting, the notice starting and
ending, each key pressed at its own time (``keys_at``; a row from before those were kept shows its
keys as one event at ``consent_at``), consent settled, recording starting, each pause and resume,
parties joining and leaving (a transfer target joining is a transfer), the call handed back to the
dialplan, and the hang-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

# Order of events at the same instant: cause before effect.
_ORDER = ("call_start", "notice_start", "key", "keys", "notice_end", "consent", "recording_start",
          "handed_back", "party_joined", "transfer", "pause", "resume", "party_left", "hangup")


def _ms(later: datetime, earlier: datetime) -> int:
    return round((later - earlier).total_seconds() * 1000)


def build(call: Mapping[str, Any], pauses: Sequence[Mapping[str, Any]],
          parties: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The timeline of one call row (``calls``), its ``recording_pauses`` and ``call_parties`` rows."""
    start: datetime = call["started_at"]
    available = call.get("recording_status") == "ready" and call.get("audio_deleted_at") is None
    # A row without the recording's start (written before the column was kept): the file began with the call.
    rec_start: datetime | None = call.get("recording_started_at") or (start if available else None)
    events: list[dict[str, Any]] = []

    def add(kind: str, at: datetime | None, **detail: Any) -> None:
        if at is None:
            return
        audio_ms = _ms(at, rec_start) if available and rec_start is not None and at >= rec_start else None
        events.append({"kind": kind, "at": at, "call_ms": _ms(at, start), "audio_ms": audio_ms,
                       "detail": {k: v for k, v in detail.items() if v is not None}})

    add("call_start", start, direction=call.get("direction"))
    add("notice_start", call.get("notice_started_at"))
    add("notice_end", call.get("notice_finished_at"), completed=call.get("notice_completed"))
    keys: str = call.get("keys_pressed") or ""
    keys_at: Sequence[datetime] = call.get("keys_at") or ()
    if keys and len(keys_at) == len(keys):
        for key, pressed in zip(keys, keys_at, strict=True):
            add("key", pressed, key=key)
    elif keys:  # a row from before the keys' own times were kept (migration 022): all at consent
        add("keys", call.get("consent_at") or call.get("notice_finished_at"), keys=keys)
    if call.get("consent"):
        add("consent", call.get("consent_at") or call.get("handed_back_at"), consent=call["consent"],
            key=call.get("consent_key"))
    add("recording_start", call.get("recording_started_at"))
    add("handed_back", call.get("handed_back_at"))
    for p in pauses:
        add("pause", p.get("paused_at"), by=p.get("paused_by"), source=p.get("pause_source"))
        add("resume", p.get("resumed_at"), by=p.get("resumed_by"), source=p.get("resume_source"))
    for party in parties:
        role = party.get("role")
        who = {"role": role, "number": party.get("number"), "name": party.get("name")}
        # The first caller and agent are there from the start; who came later joined (or was transferred to).
        if party.get("joined_at") is not None and _ms(party["joined_at"], start) > 0:
            add("transfer" if role == "transfer_target" else "party_joined", party["joined_at"], **who)
        left = party.get("left_at")
        # Leaving with the hang-up is the hang-up; only an earlier departure is its own event.
        if left is not None and (call.get("ended_at") is None or _ms(call["ended_at"], left) > 500):
            add("party_left", left, **who)
    add("hangup", call.get("ended_at"), cause=call.get("hangup_cause"), cause_text=call.get("hangup_cause_text"))
    events.sort(key=lambda e: (e["at"], _ORDER.index(e["kind"])))
    end: datetime | None = call.get("ended_at")
    return {
        "started_at": start, "ended_at": end, "duration_ms": _ms(end, start) if end else None,
        "consent": call.get("consent"), "consent_mode": call.get("consent_mode"),
        "recording": {"status": call.get("recording_status"), "available": available,
                      "offset_ms": _ms(rec_start, start) if rec_start else None,
                      "duration_ms": round(call["recording_duration"] * 1000)
                      if call.get("recording_duration") is not None else None,
                      "deleted_at": call.get("audio_deleted_at")},
        "events": events,
    }
