"""A call's transcript in exports (subject export, and the evidence export when asked for): one JSON file
per call, ``transcripts/<call id>.json``, hashed in the manifest like the audio.

Kept apart from ``evidence.py`` on purpose: :func:`attach_transcripts` adds each call's transcript to its
export document (a database read), :func:`transcript_bytes` is the file's exact content, and
:func:`export_transcripts` is the one place the export writes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from callrec.store.db import Db
from callrec.store.transcripts import load_transcript

TRANSCRIPT_DIR = "transcripts"
_TALK = ("talk_ms", "caller_talk_ms", "agent_talk_ms", "agent_talk_ratio", "overtalk_ms", "silence_ms",
         "silence_share", "longest_silence_ms")


def transcript_document(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored transcript (``load_transcript``) as the export shows it: the dialogue with speakers and
    times, each word with its time, and the recording it was made from."""
    return {
        "call_id": stored["call_id"],
        "recording_sha256": stored["recording_sha256"],
        "model": stored["model"], "model_sha256": stored["model_sha256"],
        "language": stored["language"], "language_detected": stored["language_detected"],
        "duration_ms": stored["duration_ms"], "stereo": stored["stereo"], "redacted": stored["redacted"],
        "transcribed_at": stored["transcribed_at"].isoformat() if stored["transcribed_at"] else None,
        "talk": {k: stored[k] for k in _TALK},
        "dialogue": [{"speaker": s["speaker"], "start_ms": s["start_ms"], "end_ms": s["end_ms"], "text": s["text"],
                      "words": s["words"]} for s in stored["segments"]],
    }


def transcript_bytes(document: dict[str, Any]) -> bytes:
    """The exact bytes of a call's transcript file (stable: sorted keys, UTF-8)."""
    return (json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


async def attach_transcripts(conn: Db, docs: list[dict[str, Any]]) -> int:
    """Add ``transcript`` to each call document that has one; returns how many do.  The caller audits the
    export (a transcript read)."""
    found = 0
    for doc in docs:
        stored = await load_transcript(conn, doc["id"])
        if stored is not None:
            doc["transcript"] = transcript_document(stored)
            found += 1
    return found


def export_transcripts(write: Callable[[str, bytes], None], docs: list[dict[str, Any]],
                       files: list[dict[str, Any]]) -> int:
    """Write the attached transcripts as files (``write(name, data)``: into the export's folder or
    straight into its zip), name them in their call's document (``transcript_file``) and in the
    manifest's file list (kind ``transcript``).  Blocking file work."""
    written = 0
    for doc in docs:
        document = doc.pop("transcript", None)
        if document is None:
            continue
        data = transcript_bytes(document)
        rel = f"{TRANSCRIPT_DIR}/{doc['id']}.json"
        write(rel, data)
        doc["transcript_file"] = rel
        files.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                      "call_id": doc["id"], "kind": "transcript"})
        written += 1
    return written
