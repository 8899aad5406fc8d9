"""The console's player: a call's waveform peaks and timeline, and who read the call.

- ``GET /api/v1/calls/{id}/waveform``: peaks per channel (stereo: caller left, agent right), computed
  from the recording on first request and kept in ``call_waveforms`` (migration 019) under the
  recording's sha256; the database drops them when the audio is deleted.  Peaks show when each party
  talked, not what was said, but they are read from the recording: the same permission as the audio
  (``calls.audio``), the visibility rule, and one ``waveform`` audit entry per principal, call and
  ``AUDIO_AUDIT_WINDOW_S`` (as a listen).
- ``GET /api/v1/calls/{id}/timeline``: the call's events from the call log (calls/timeline.py), with
  millisecond offsets; a call without audio has one too.  No audio is read: ``calls.view``, audited
  as the call's ``view`` is (the page that asks for it has just written one).
- ``GET /api/v1/calls/{id}/readers``: who viewed, listened to, downloaded or exported the call, from the
  audit trail (``calls.readers``: supervisor and up).
- ``GET /api/v1/tags``: the tags in use on the calls the principal sees, most used first (the roles that
  may tag: the console's tag suggestions).
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from callrec.recording.files import open_recording
from callrec.recording.waveform import compute_peaks
from callrec.storage import Storage
from callrec.store import audit, marks, timeline
from callrec.web import openapi
from callrec.web.auth import need, remote
from callrec.web.common import CALL_ID_PARAM, NOT_FOUND_RESPONSE, call_id_of, check_query, respond, visible_call
from callrec.web.errors import bad_request, json_error
from callrec.web.keys import POOL, STORAGE
from callrec.web.routes_calls import AUDIO_AUDIT_WINDOW_S, audio_errors

log = logging.getLogger("callrec.http")

# At most this many waveforms computed at once: each reads a whole recording.
_COMPUTING = web.AppKey("waveforms_computing", asyncio.Semaphore)


def _no_audio(row: Any) -> None:
    if row["audio_deleted_at"] is not None:
        raise json_error(404, "the recording of this call was deleted")
    if row["recording_status"] != "ready" or not row["recording_sha256"]:
        raise json_error(404, "this call has no recording")


def _read_peaks(storage: Storage, rel: str) -> dict[str, Any]:
    """Through the storage module, like every other read of audio: a plain local file is read in place; an
    encrypted one or one only in the bucket is decrypted/downloaded into a private temporary file first
    (soundfile needs to seek)."""
    blob = storage.open(rel)
    try:
        if blob.where == "local" and not blob.encrypted:
            with open_recording(storage.local_dir, rel) as fh:
                return compute_peaks(fh).as_dict()
    finally:
        blob.close()
    with tempfile.TemporaryDirectory(prefix="callrec-waveform-") as scratch:
        path, _, _ = storage.plain_file(rel, Path(scratch))
        with path.open("rb") as fh:
            return compute_peaks(fh).as_dict()


async def waveform(request: web.Request) -> web.Response:
    p = need(request, "calls.audio")
    call_id = call_id_of(request)
    pool = request.app[POOL]
    row = await visible_call(pool, p, call_id)
    _no_audio(row)
    sha = row["recording_sha256"]
    cached = await pool.fetchval("SELECT peaks FROM call_waveforms WHERE call_id = $1::uuid AND recording_sha256 = $2",
                                 call_id, sha)
    if cached is None:
        async with request.app[_COMPUTING]:
            with audio_errors(call_id):
                peaks = await asyncio.to_thread(_read_peaks, request.app[STORAGE], row["recording_path"])
        # The audio may have been deleted meanwhile: the insert then stores nothing.
        await pool.execute(
            "INSERT INTO call_waveforms (call_id, recording_sha256, peaks) "
            "SELECT $1::uuid, $2, $3::jsonb FROM calls WHERE id = $1::uuid AND audio_deleted_at IS NULL "
            "AND recording_sha256 = $2 "
            "ON CONFLICT (call_id) DO UPDATE SET recording_sha256 = EXCLUDED.recording_sha256, "
            "peaks = EXCLUDED.peaks, computed_at = now()", call_id, sha, json.dumps(peaks))
    else:
        peaks = json.loads(cached) if isinstance(cached, str) else cached
    await audit.append_once_per_window(pool, window_s=AUDIO_AUDIT_WINDOW_S, actor=p.name, role=p.role,
                                       action="waveform", call_id=call_id, remote=remote(request))
    channels = peaks["channels"]
    peaks["labels"] = ["caller", "agent"] if channels == 2 else ["mixed"] * channels
    return respond(peaks)


async def call_timeline(request: web.Request) -> web.Response:
    p = need(request, "calls.view")
    call_id = call_id_of(request)
    async with request.app[POOL].acquire() as conn:
        row = await visible_call(conn, p, call_id)
        pauses = await conn.fetch("SELECT * FROM recording_pauses WHERE call_id = $1 ORDER BY seq", row["id"])
        parties = await conn.fetch("SELECT * FROM call_parties WHERE call_id = $1 ORDER BY seq", row["id"])
    return respond(timeline.build(dict(row), [dict(x) for x in pauses], [dict(x) for x in parties]))


async def readers(request: web.Request) -> web.Response:
    p = need(request, "calls.readers")
    call_id = call_id_of(request)
    async with request.app[POOL].acquire() as conn:
        await visible_call(conn, p, call_id)
        items = await audit.call_readers(conn, call_id)
    return respond({"items": items})


async def tags(request: web.Request) -> web.Response:
    p = need(request, "calls.tag")
    check_query(request, ("prefix",))
    prefix = request.query.get("prefix", "")
    if len(prefix) > 64:
        raise bad_request("prefix: expected at most 64 characters")
    async with request.app[POOL].acquire() as conn:
        items = await marks.tags_in_use(conn, p, prefix)
    return respond({"items": items})


def setup(app: web.Application) -> None:
    app[_COMPUTING] = asyncio.Semaphore(2)
    app.router.add_get("/api/v1/calls/{id}/waveform", waveform, allow_head=False)
    app.router.add_get("/api/v1/calls/{id}/timeline", call_timeline, allow_head=False)
    app.router.add_get("/api/v1/calls/{id}/readers", readers, allow_head=False)
    app.router.add_get("/api/v1/tags", tags, allow_head=False)


# --- their OpenAPI description (one block) ----------------------------------------------------------------
_NULL_STR = {"type": ["string", "null"]}
_NULL_INT = {"type": ["integer", "null"]}
openapi.operation(
    "get", "/api/v1/calls/{id}/waveform", tags=["calls"], parameters=[CALL_ID_PARAM],
    summary="Waveform peaks of the recording, per channel (stereo: caller, agent); audited as `waveform`",
    responses={"200": openapi.json_response("peaks: 0-255 of full scale, one per bucket and channel", {
        "type": "object", "required": ["channels", "buckets", "bucket_ms", "duration_ms", "peaks", "labels"],
        "properties": {
            "channels": {"type": "integer"}, "buckets": {"type": "integer"}, "bucket_ms": {"type": "integer"},
            "duration_ms": {"type": "integer"},
            "labels": {"type": "array", "items": {"type": "string", "enum": ["caller", "agent", "mixed"]}},
            "peaks": {"type": "array", "items": {"type": "array", "items": {
                "type": "integer", "minimum": 0, "maximum": 255}}}}}),
        "409": {"description": "the recording path is a symbolic link: refused", "content": openapi.ERR},
        **NOT_FOUND_RESPONSE})
openapi.operation(
    "get", "/api/v1/calls/{id}/timeline", tags=["calls"], parameters=[CALL_ID_PARAM],
    summary="The call's events from the call log (notice, keys, consent, recording, pauses, parties, hang-up)",
    responses={"200": openapi.json_response("the timeline", {"type": "object", "properties": {
        "started_at": {"type": "string"}, "ended_at": _NULL_STR, "duration_ms": _NULL_INT,
        "consent": _NULL_STR, "consent_mode": _NULL_STR,
        "recording": {"type": "object", "properties": {
            "status": {"type": "string"}, "available": {"type": "boolean"},
            "offset_ms": {**_NULL_INT, "description": "where the recording starts in the call"},
            "duration_ms": _NULL_INT, "deleted_at": _NULL_STR}},
        "events": {"type": "array", "items": {"type": "object", "required": ["kind", "at", "call_ms", "audio_ms"],
                                               "properties": {
            "kind": {"type": "string", "enum": list(timeline._ORDER)}, "at": {"type": "string"},
            "call_ms": {"type": "integer", "description": "from the call's start"},
            "audio_ms": {**_NULL_INT, "description": "in the recording (null: outside it, or no audio)"},
            "detail": {"type": "object"}}}}}}), **NOT_FOUND_RESPONSE})
openapi.operation(
    "get", "/api/v1/calls/{id}/readers", tags=["calls"], parameters=[CALL_ID_PARAM],
    summary="Who viewed, listened to, downloaded or exported the call (from the audit trail)",
    responses={"200": openapi.json_response("per person and action", {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "actor": {"type": "string"}, "role": _NULL_STR, "action": {"type": "string"},
            "times": {"type": "integer"}, "first_at": {"type": "string"}, "last_at": {"type": "string"}}}}}}),
        **NOT_FOUND_RESPONSE})
openapi.operation(
    "get", "/api/v1/tags", tags=["calls"],
    parameters=[openapi.query_param("prefix", {"type": "string", "maxLength": 64}, "tags starting with this")],
    summary="Tags in use on the calls this principal sees, most used first (at most 50)",
    responses={"200": openapi.json_response("the tags", {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "tag": {"type": "string"}, "calls": {"type": "integer"}}}}}})})
