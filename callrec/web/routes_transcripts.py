"""A call's transcript: ``GET /api/v1/calls/{id}/transcript`` (the dialogue with word times, talk statistics).

A transcript is what was said on the call, so it follows the recording's rules: the permission to hear
recordings, the visibility rule (404 when hidden, the same as unknown), and one audit entry
(``transcript_read``) per read.  Without a transcript the 404 says where the call is in the queue.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from callrec.store import audit
from callrec.store.transcripts import load_transcript
from callrec.web import openapi
from callrec.web.auth import need, remote
from callrec.web.common import CALL_ID_PARAM, call_id_of, json_default, respond, visible_call
from callrec.web.errors import bad_request
from callrec.web.keys import POOL

TALK_KEYS = ("talk_ms", "caller_talk_ms", "agent_talk_ms", "agent_talk_ratio", "overtalk_ms", "silence_ms",
             "silence_share", "longest_silence_ms")


def transcript_body(t: dict[str, Any]) -> dict[str, Any]:
    """The API's form of ``store.transcripts.load_transcript``'s dict (contract 2)."""
    body = {key: t[key] for key in ("call_id", "language", "language_detected", "model", "duration_ms", "stereo",
                                    "redacted", "transcribed_at")}
    body["talk"] = {key: t[key] for key in TALK_KEYS}
    body["segments"] = t["segments"]
    return body


async def transcript(request: web.Request) -> web.Response:
    p = need(request, "calls.audio")  # what was said is the recording's content: the same roles
    call_id = call_id_of(request)
    if request.query:
        raise bad_request(f"{sorted(request.query)[0]}: unknown parameter")
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        await visible_call(conn, p, call_id)
        async with conn.transaction(isolation="repeatable_read"):
            t = await load_transcript(conn, call_id)
            if t is None:
                job = await conn.fetchrow("SELECT state, progress FROM speech_jobs WHERE call_id = $1::uuid", call_id)
            else:
                # Every read is one entry, written with the read (both or neither).
                await audit.append(conn, actor=p.name, role=p.role, action="transcript_read", call_id=call_id,
                                   details={"segments": len(t["segments"]), "model": t["model"]},
                                   remote=remote(request))
    if t is None:
        state = job["state"] if job is not None and job["state"] != "done" else None
        progress = float(job["progress"]) if job is not None and job["progress"] is not None else None
        return web.json_response({"error": _why(state), "job": {"state": state, "progress": progress}},
                                 status=404)
    return respond(json.loads(json.dumps(transcript_body(t), default=json_default)))


def _why(state: str | None) -> str:
    return {"pending": "this call is waiting to be transcribed",
            "running": "this call is being transcribed",
            "failed": "transcribing this call failed",
            "skipped": "this call was not transcribed (skipped)"}.get(state or "", "this call has no transcript")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls/{id}/transcript", transcript, allow_head=False)


_NULLABLE_NUM = {"type": ["number", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
openapi.SCHEMAS["Transcript"] = {"type": "object", "required": ["call_id", "segments", "talk"], "properties": {
    "call_id": {"type": "string", "format": "uuid"}, "language": {"type": ["string", "null"]},
    "language_detected": {"type": "boolean"}, "model": {"type": "string"}, "duration_ms": {"type": "integer"},
    "stereo": {"type": "boolean"}, "redacted": {"type": "integer", "description": "secrets masked before storing"},
    "transcribed_at": {"type": "string"},
    "talk": {"type": "object", "properties": {
        "talk_ms": {"type": "integer"}, "caller_talk_ms": _NULLABLE_INT, "agent_talk_ms": _NULLABLE_INT,
        "agent_talk_ratio": _NULLABLE_NUM, "overtalk_ms": {"type": "integer"}, "silence_ms": {"type": "integer"},
        "silence_share": {"type": "number"}, "longest_silence_ms": {"type": "integer"}}},
    "segments": {"type": "array", "items": {"type": "object", "properties": {
        "seq": {"type": "integer"}, "speaker": {"type": "string", "enum": ["caller", "agent", "mixed"]},
        "start_ms": {"type": "integer"}, "end_ms": {"type": "integer"}, "text": {"type": "string"},
        "words": {"type": "array", "items": {"type": "object", "properties": {
            "text": {"type": "string"}, "start_ms": {"type": "integer"}, "end_ms": {"type": "integer"},
            "probability": {"type": "number"}}}}}}}}}
openapi.operation(
    "get", "/api/v1/calls/{id}/transcript", summary="The call's transcript: dialogue, word times, talk (audited)",
    tags=["calls"], parameters=[CALL_ID_PARAM],
    responses={"200": openapi.json_response("the transcript", {"$ref": "#/components/schemas/Transcript"}),
               "404": openapi.json_response(
                   "no such call, not visible to this principal, or no transcript (then job says why)",
                   {"type": "object", "properties": {"error": {"type": "string"}, "job": {
                       "type": "object", "properties": {
                           "state": {"type": ["string", "null"],
                                     "enum": ["pending", "running", "failed", "skipped", None]},
                           "progress": _NULLABLE_NUM}}}})})
