"""Transcripts in PostgreSQL (migration 008): save one as a whole, read it back as a dialogue, delete it.

The store knows transcripts only in their JSON form (``callrec.speech.Transcript.to_dict()``) and talk
statistics as ``TalkStats.to_dict()``: plain data, so this room needs nothing of the speech engine.
Redaction happens before :func:`save_transcript` (what is stored is what may be read).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from callrec.store.db import Conn, Db

__all__ = ["TRANSCRIPT_COLUMNS", "delete_transcript", "dialogue", "load_transcript", "save_transcript"]

# The transcripts row as the API and the CLI show it (besides call_id).
TRANSCRIPT_COLUMNS = (
    "recording_sha256", "model", "model_sha256", "language", "language_detected", "duration_ms", "stereo",
    "words", "redacted", "talk_ms", "caller_talk_ms", "agent_talk_ms", "agent_talk_ratio", "overtalk_ms",
    "silence_ms", "silence_share", "longest_silence_ms", "decode_s", "transcribed_at",
)
_SEGMENT_COLUMNS = ("call_id", "seq", "speaker", "start_ms", "end_ms", "text", "words")


def dialogue(transcript: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every segment of every track in dialogue order (start time, then channel), with its speaker."""
    merged = [(s["start_ms"], t["channel"], t["speaker"], s) for t in transcript["tracks"] for s in t["segments"]]
    merged.sort(key=lambda m: (m[0], m[1]))
    return [{"speaker": speaker, "start_ms": int(s["start_ms"]), "end_ms": int(s["end_ms"]), "text": s["text"],
             "words": [[w["text"], int(w["start_ms"]), int(w["end_ms"]), round(float(w["probability"]), 4)]
                       for w in s["words"]]}
            for _, _, speaker, s in merged]


async def save_transcript(conn: Conn, call_id: str, transcript: Mapping[str, Any], stats: Mapping[str, Any], *,
                          recording_sha256: str, model_sha256: str | None = None,
                          decode_s: float | None = None) -> int:
    """Store (or replace) a call's transcript and talk statistics in one transaction; returns the number of
    segments.  A second save for the same call replaces the first as a whole, so a job run twice leaves one
    transcript."""
    segments = dialogue(transcript)
    talk = stats.get("talk_ms", {})
    ratio = stats.get("talk_ratio", {})
    stereo = len(transcript["tracks"]) == 2
    words = sum(len(s["words"]) for s in segments)
    async with conn.transaction():
        await conn.execute("DELETE FROM transcript_segments WHERE call_id = $1::uuid", call_id)
        await conn.execute(
            """INSERT INTO transcripts (call_id, recording_sha256, model, model_sha256, language, language_detected,
                   duration_ms, stereo, words, redacted, talk_ms, caller_talk_ms, agent_talk_ms, agent_talk_ratio,
                   overtalk_ms, silence_ms, silence_share, longest_silence_ms, decode_s, transcribed_at)
               VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                       now())
               ON CONFLICT (call_id) DO UPDATE SET
                   recording_sha256 = EXCLUDED.recording_sha256, model = EXCLUDED.model,
                   model_sha256 = EXCLUDED.model_sha256, language = EXCLUDED.language,
                   language_detected = EXCLUDED.language_detected, duration_ms = EXCLUDED.duration_ms,
                   stereo = EXCLUDED.stereo, words = EXCLUDED.words, redacted = EXCLUDED.redacted,
                   talk_ms = EXCLUDED.talk_ms, caller_talk_ms = EXCLUDED.caller_talk_ms,
                   agent_talk_ms = EXCLUDED.agent_talk_ms, agent_talk_ratio = EXCLUDED.agent_talk_ratio,
                   overtalk_ms = EXCLUDED.overtalk_ms, silence_ms = EXCLUDED.silence_ms,
                   silence_share = EXCLUDED.silence_share, longest_silence_ms = EXCLUDED.longest_silence_ms,
                   decode_s = EXCLUDED.decode_s, transcribed_at = now()""",
            call_id, recording_sha256, transcript.get("model") or "", model_sha256, transcript.get("language"),
            bool(transcript.get("language_detected")), int(transcript["duration_ms"]), stereo, words,
            int(transcript.get("redacted", 0)),
            int(stats.get("duration_ms", 0)) - int(stats.get("silence_ms", 0)),
            talk.get("caller") if stereo else None, talk.get("agent") if stereo else None,
            ratio.get("agent") if stereo else None,
            int(stats.get("overtalk_ms", 0)), int(stats.get("silence_ms", 0)),
            float(stats.get("silence_share", 0.0)), int(stats.get("longest_silence_ms", 0)), decode_s)
        if segments:
            await conn.copy_records_to_table(
                "transcript_segments", columns=_SEGMENT_COLUMNS,
                records=[(_uuid(call_id), seq, s["speaker"], s["start_ms"], s["end_ms"], s["text"],
                          json.dumps(s["words"], ensure_ascii=False))
                         for seq, s in enumerate(segments)])
    return len(segments)


def _uuid(call_id: str) -> uuid.UUID:
    return uuid.UUID(call_id)  # COPY's binary format wants a UUID object, not text


async def load_transcript(conn: Db, call_id: str) -> dict[str, Any] | None:
    """The stored transcript: its row's fields and ``segments`` in dialogue order, each with ``words`` as
    ``{"text", "start_ms", "end_ms", "probability"}``; None when the call has none.  Reading a transcript is
    personal data: the caller checks visibility and audits the read."""
    row = await conn.fetchrow("SELECT * FROM transcripts WHERE call_id = $1::uuid", call_id)
    if row is None:
        return None
    out: dict[str, Any] = {"call_id": str(row["call_id"])}
    out.update({k: row[k] for k in TRANSCRIPT_COLUMNS})
    rows = await conn.fetch("SELECT seq, speaker, start_ms, end_ms, text, words FROM transcript_segments "
                            "WHERE call_id = $1::uuid ORDER BY seq", call_id)
    out["segments"] = [{"seq": r["seq"], "speaker": r["speaker"], "start_ms": r["start_ms"], "end_ms": r["end_ms"],
                        "text": r["text"], "words": _words(r["words"])} for r in rows]
    return out


def _words(raw: str | Sequence[Any]) -> list[dict[str, Any]]:
    items = json.loads(raw) if isinstance(raw, str) else raw
    return [{"text": w[0], "start_ms": w[1], "end_ms": w[2], "probability": w[3]} for w in items]


async def delete_transcript(conn: Db, call_id: str) -> bool:
    """Remove a call's transcript (its segments go with it); False when it had none."""
    return bool(await conn.fetchval("DELETE FROM transcripts WHERE call_id = $1::uuid RETURNING true", call_id))
