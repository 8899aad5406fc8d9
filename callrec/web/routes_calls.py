"""Calls: search, count, detail, audio (Range), export (streamed), tags, confidential, delete audio.

Every route finds calls through callquery or ``common.visible_call`` (access.visible_calls_sql): a
call the principal may not see is a 404, the same as a call that does not exist.  Tags and the
confidential mark are changed through store/marks.py, audio deleted through the deletion gate
(dataops/deletion.py), like every other deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from callrec.dataops import deletion
from callrec.recording.files import OutsideFolder, SymlinkedRecording
from callrec.storage import BadCiphertext, StorageUnavailable, WrongMasterKey, in_thread
from callrec.store import audit, callquery, marks
from callrec.store.db import Db
from callrec.web import openapi
from callrec.web.auth import need, remote
from callrec.web.common import (
    CALL_ID_PARAM,
    EXPORT_SLOTS,
    FILTER_PARAMS,
    NOT_FOUND_RESPONSE,
    ReaderDropped,
    audit_window_sweeper,
    call_id_of,
    export_slot,
    filter_of,
    json_default,
    read_json,
    respond,
    time_zone,
    visible_call,
    write_or_drop,
)
from callrec.web.errors import bad_request, json_error, not_found
from callrec.web.keys import POOL, READ_POOL, SETTINGS, STORAGE
from callrec.web.ranges import Unsatisfiable, parse_range

log = logging.getLogger("callrec.http")
T = TypeVar("T")

CHUNK = 256 * 1024
# A listen or download is audited at its first request, whatever its Range, then at most once per
# this many seconds for the same principal, call and action (a player's seeks write no more rows).
AUDIO_AUDIT_WINDOW_S = 30 * 60


# --- search / count -------------------------------------------------------------------------------

async def search(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    f = filter_of(request)
    pool = request.app[POOL]
    reads = request.app[READ_POOL]  # a read replica when configured; audit entries go to the primary
    rows, cursor = await filtered(callquery.search(reads, f, p))
    hits = await callquery.page_hits(reads, f, rows)
    items = [callquery.summary(r) for r in rows]
    if hits is not None:
        # Only the calls of this page, found with the visibility rule: no hit of a hidden call exists here.
        for item in items:
            item["hits"] = hits.get(item["id"], [])
        # Snippets are pieces of transcripts: who searched for what, and whose words were shown.
        await audit.append(pool, actor=p.name, role=p.role, action="transcript_search",
                           details=callquery.said_audit(f, hits), remote=remote(request))
    # Paging is a bulk read: every page counted, per principal and window (store/audit.py).
    await audit.note_search_page(pool, window_s=request.app[SETTINGS].http.search_audit_window, actor=p.name,
                                 role=p.role, rows=len(rows), remote=remote(request))
    return respond({"items": items, "next_cursor": cursor})


async def filtered(outcome: Awaitable[T]) -> T:
    """Await a search step; a filter PostgreSQL had to judge (``said`` of stop words only) is a 400."""
    try:
        return await outcome
    except callquery.FilterError as exc:
        raise bad_request(str(exc)) from None


async def count(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    f = filter_of(request)
    if f.cursor is not None:
        raise bad_request("cursor: not used by count")
    n, exact = await filtered(callquery.count(request.app[READ_POOL], f, p))
    return respond({"count": n, "count_exact": exact})


# --- detail ---------------------------------------------------------------------------------------

def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def call_detail(conn: Db, row: asyncpg.Record) -> dict[str, Any]:
    r = dict(row)
    call_id = r["id"]
    tags = await marks.call_tags(conn, str(call_id))
    parties = [dict(x) for x in await conn.fetch(
        "SELECT seq, number, name, role, joined_at, left_at FROM call_parties WHERE call_id = $1 ORDER BY seq",
        call_id)]
    pauses = [dict(x) for x in await conn.fetch(
        "SELECT seq, paused_at, paused_by, pause_source, resumed_at, resumed_by, resume_source "
        "FROM recording_pauses WHERE call_id = $1 ORDER BY seq", call_id)]
    duration = (r["ended_at"] - r["started_at"]).total_seconds() if r["ended_at"] else None
    out: dict[str, Any] = {
        key: r[key] for key in (
            "id", "door", "uniqueid", "linkedid", "channel", "caller_number", "caller_name", "called_number",
            "context", "direction", "agent", "channel_language", "language", "policy_rule", "consent_mode",
            "state", "consent", "started_at", "handed_back_at", "ended_at", "finalized_at", "hangup_cause",
            "hangup_cause_text", "warnings", "confidential", "confidential_at", "confidential_by")
    }
    out["duration"] = duration
    out["evidence"] = {
        "notice_prompt": r["notice_prompt"], "sha256": r["notice_prompt_sha256"],
        "duration": r["notice_prompt_duration"], "started_at": r["notice_started_at"],
        "finished_at": r["notice_finished_at"], "completed": r["notice_completed"], "consent": r["consent"],
        "consent_key": r["consent_key"], "keys_pressed": r["keys_pressed"], "keys_at": r["keys_at"],
        "consent_at": r["consent_at"],
    }
    out["recording"] = {
        "status": r["recording_status"], "duration": r["recording_duration"], "bytes": r["recording_bytes"],
        "sha256": r["recording_sha256"], "rms_dbfs": r["recording_rms_dbfs"], "peak_dbfs": r["recording_peak_dbfs"],
        "started_at": r["recording_started_at"], "error": r["recording_error"],
        "deleted_at": r["audio_deleted_at"], "deleted_by": r["audio_deleted_by"],
        "available": r["recording_status"] == "ready" and r["audio_deleted_at"] is None,
    }
    out["tags"] = tags
    out["transcript"] = await callquery.transcript_of(conn, str(call_id))
    out["legal_hold"] = bool(r.get("legal_hold") or False)  # column added by the retention migration
    # Who set or released the hold, when and why: the console's hold badge says so.
    out["legal_hold_by"], out["legal_hold_at"] = r.get("legal_hold_by"), r.get("legal_hold_at")
    out["legal_hold_reason"] = r.get("legal_hold_reason")
    out["parties"] = parties
    if pauses is not None:
        out["pauses"] = pauses
    out["id"] = str(call_id)
    return json.loads(json.dumps(out, default=json_default))


async def detail(request: web.Request) -> web.Response:
    p = need(request, "calls.view")
    call_id = call_id_of(request)
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        row = await visible_call(conn, p, call_id)
        body = await call_detail(conn, row)
        await audit.append(conn, actor=p.name, role=p.role, action="view", call_id=call_id, remote=remote(request))
    return respond(body)


# --- audio ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def audio_errors(call_id: str) -> Iterator[None]:
    """What a failed read of a call's audio answers (the player, the download, the waveform): logged with the
    call's id, never the path or a key; the client gets a status and a plain sentence."""
    try:
        yield
    except SymlinkedRecording:
        log.warning("call %s: the recording path is a symbolic link; refused (callrec verify lists it)", call_id)
        raise json_error(409, "the recording file is a symbolic link; refused") from None
    except (OutsideFolder, FileNotFoundError):
        log.warning("call %s: recording missing from storage", call_id)
        raise json_error(404, "the recording file is missing") from None
    except StorageUnavailable as exc:
        log.warning("call %s: recording storage unavailable: %s", call_id, exc)
        raise json_error(503, "the recording storage is unavailable; try again later") from None
    except (WrongMasterKey, BadCiphertext) as exc:
        log.error("call %s: %s", call_id, exc)
        raise json_error(500, "the recording cannot be decrypted (see the server log)") from None
    except (OSError, RuntimeError) as exc:
        # soundfile raises RuntimeError (LibsndfileError) for a file it cannot read.
        log.warning("call %s: recording not readable: %s", call_id, type(exc).__name__)
        raise json_error(404, "the recording file is missing or unreadable") from None


async def audio(request: web.Request) -> web.StreamResponse:
    p = need(request, "calls.audio")
    call_id = call_id_of(request)
    unknown = set(request.query) - {"download"}
    if unknown:
        raise bad_request(f"{sorted(unknown)[0]}: unknown parameter")
    dl = request.query.get("download", "0")
    if dl not in ("0", "1", "true", "false"):
        raise bad_request("download: expected 1 or 0")
    download = dl in ("1", "true")
    pool = request.app[POOL]
    row = await visible_call(pool, p, call_id)
    if row["audio_deleted_at"] is not None:
        raise json_error(404, "the recording of this call was deleted")
    if row["recording_status"] != "ready":
        raise json_error(404, "this call has no recording")
    storage = request.app[STORAGE]
    with audio_errors(call_id):
        blob = await in_thread(storage.open, row["recording_path"])
    try:
        size = blob.size
        try:
            span = parse_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            raise json_error(416, "range not satisfiable", headers={"Content-Range": f"bytes */{size}"}) from None
        if request.headers.get("If-Range") and span is not None:
            span = None  # no validators to compare against reliably: send it whole
        start, end = span if span is not None else (0, size - 1)
        # Every request is audited, whatever its range, but a player's many range requests write
        # one row per (principal, call, action) and AUDIO_AUDIT_WINDOW_S, not one per request.
        await audit.append_once_per_window(
            pool, window_s=AUDIO_AUDIT_WINDOW_S, actor=p.name, role=p.role,
            action="download" if download else "listen", call_id=call_id,
            details={"range": request.headers.get("Range")}, remote=remote(request))
        # Only the bytes asked for are read (from the bucket: one ranged GET; encrypted: only the chunks that
        # hold them are decrypted).  The first block is read before the headers go out, so a storage error
        # is still a clean status.
        blocks = await in_thread(blob.iter_range, start, end)
        try:
            first = await in_thread(next, blocks, b"")
        except (StorageUnavailable, BadCiphertext) as exc:
            log.warning("call %s: recording not readable from storage: %s", call_id, exc)
            raise json_error(503, "the recording storage is unavailable; try again later") from None
        resp = web.StreamResponse(status=206 if span is not None else 200)
        resp.content_type = "audio/wav"
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        kind = "attachment" if download else "inline"
        resp.headers["Content-Disposition"] = f'{kind}; filename="call-{call_id}.wav"'
        if row["recording_sha256"]:
            resp.headers["ETag"] = f'"{row["recording_sha256"][:32]}"'
        if span is not None:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp.content_length = max(0, end - start + 1)
        await resp.prepare(request)
        data = first
        while data:
            await resp.write(data)
            data = await in_thread(next, blocks, b"")
        await resp.write_eof()
        return resp
    finally:
        await in_thread(blob.close)


# --- export ---------------------------------------------------------------------------------------

async def export(request: web.Request) -> web.StreamResponse:
    p = need(request, "calls.search")
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise bad_request(f"format: expected csv or json, got {fmt!r}")
    f = filter_of(request, extra_keys=("format", "tz"))
    tz = time_zone(request.query.get("tz"))
    if f.cursor is not None or "limit" in request.query:
        raise bad_request("export takes no limit or cursor: it streams every matching call")
    async with export_slot(request, p):
        pool, reads = request.app[POOL], request.app[READ_POOL]
        await filtered(callquery.prepare(reads, f))
        await audit.append(pool, actor=p.name, role=p.role, action="export",
                           details={"format": fmt, "filter": f.describe()}, remote=remote(request))
        sql, args = callquery.export_sql(f, p, fmt, tz)
        resp = web.StreamResponse()
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        if fmt == "csv":
            resp.content_type = "text/csv"
            resp.charset = "utf-8"
        else:
            resp.content_type = "application/json"
        resp.headers["Content-Disposition"] = f'attachment; filename="calls-{stamp}.{fmt}"'
        resp.enable_chunked_encoding()
        sink = _CopySink(request, resp, fmt)
        try:
            async with reads.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
                await conn.execute(callquery.CUSTOM_PLANS)
                await conn.execute("SET LOCAL TimeZone = 'UTC'")  # JSON times as isoformat() in UTC
                # PostgreSQL writes the rows (COPY: several times the rows/s of encoding them here), passed on as
                # they come, so memory stays flat.  The headers go out with the first piece: a query error
                # before it is still a clean error.
                if fmt == "csv":
                    await conn.copy_from_query(sql, *args, output=sink.write, format="csv", header=True,
                                               timeout=EXPORT_TIMEOUT)
                else:
                    # One JSON text per line: CSV with a quote and a delimiter no JSON text holds, so nothing is
                    # quoted or escaped (COPY's text format would double every backslash).
                    await conn.copy_from_query(sql, *args, output=sink.write, format="csv", quote="\x01",
                                               delimiter="\x02", timeout=EXPORT_TIMEOUT)
                await sink.end()
        except ReaderDropped:
            return resp  # its transaction rolled back, its slot freed on the way out
        await resp.write_eof()
        return resp


# COPY's time budget: an export is as long as its reader takes; a reader that stalls is dropped instead.
EXPORT_TIMEOUT = 7 * 86400.0


class _CopySink:
    """COPY's output to the response: CSV as it comes; JSON lines joined into one array."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, fmt: str) -> None:
        self.request, self.resp, self.json = request, resp, fmt == "json"
        self.held = b""  # JSON: the last ",\n" written, which the end turns into "]"

    async def write(self, chunk: bytes) -> None:
        if not self.resp.prepared:
            await self.resp.prepare(self.request)
            if self.json:
                await write_or_drop(self.request, self.resp, b"[\n")
        if self.json:
            out = self.held + chunk.replace(b"\n", b",\n")
            chunk, self.held = out[:-2], out[-2:]
        if chunk:
            await write_or_drop(self.request, self.resp, chunk)

    async def end(self) -> None:
        if not self.resp.prepared:
            await self.write(b"")
        if self.json:
            await write_or_drop(self.request, self.resp, b"]\n")


# --- tags, confidential, delete audio -------------------------------------------------------------

def _tag_value(value: Any) -> str:
    if not isinstance(value, str) or not callquery.TAG_RE.match(value) or value != value.strip():
        raise bad_request("tag: expected 1-64 printable characters without surrounding spaces")
    return value


async def add_tag(request: web.Request) -> web.Response:
    p = need(request, "calls.tag")
    call_id = call_id_of(request)
    body = await read_json(request)
    tag = _tag_value(body.get("tag"))
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await visible_call(conn, p, call_id, lock=True)
        added = await marks.add_tag(conn, call_id, tag, actor=p, remote=remote(request))
        tags = await marks.call_tags(conn, call_id)
    return respond({"tags": tags}, status=201 if added else 200)


async def remove_tag(request: web.Request) -> web.Response:
    p = need(request, "calls.tag")
    call_id = call_id_of(request)
    tag = _tag_value(request.match_info["tag"])
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await visible_call(conn, p, call_id, lock=True)
        if not await marks.remove_tag(conn, call_id, tag, actor=p, remote=remote(request)):
            raise not_found("the call has no such tag")
        tags = await marks.call_tags(conn, call_id)
    return respond({"tags": tags})


async def set_confidential(request: web.Request) -> web.Response:
    p = need(request, "calls.confidential")
    call_id = call_id_of(request)
    body = await read_json(request)
    value = body.get("confidential")
    if not isinstance(value, bool):
        raise bad_request("confidential: expected true or false")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await visible_call(conn, p, call_id, lock=True)
        await marks.set_confidential(conn, row, value, actor=p, remote=remote(request))
    return respond({"confidential": value})


# Why the deletion gate refused, as the API says it (all 409).
_REFUSALS = {
    "already": "the recording was already deleted",
    "held": "the call is under legal hold",
    "open": "the call is still going on",
    "no_audio": "this call has no recording to delete",
}


async def delete_audio(request: web.Request) -> web.Response:
    p = need(request, "calls.delete_audio")
    call_id = call_id_of(request)
    pool = request.app[POOL]
    storage = request.app[STORAGE]
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await visible_call(conn, p, call_id, lock=True)
            # Only a finished recording is deleted from the API (a failed or unclosed one stays for ops).
            if row["audio_deleted_at"] is None and row["recording_status"] != "ready":
                out = deletion.Outcome(call_id, "no_audio")
            else:
                out = await deletion.delete_audio(conn, call_id, storage, actor=p, reason="manual",
                                                  remote=remote(request))
    except StorageUnavailable as exc:  # the transaction rolled back: the row still has its audio
        log.warning("call %s: audio not deleted, storage unavailable: %s", call_id, exc)
        raise json_error(503, "the recording storage is unavailable; nothing was deleted, try again later") from None
    # Answered after the transaction: a refusal's audit entry is kept.
    if out.result != "deleted":
        raise json_error(409, _REFUSALS.get(out.result, f"not deleted: {out.result}"))
    return respond({"deleted_at": out.deleted_at, "deleted_by": p.name, "file_missing": not out.file_existed})


# --- routes and their description -----------------------------------------------------------------

def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(audit_window_sweeper("search audit", audit.close_search_windows,
                                                lambda a: a[SETTINGS].http.search_audit_window))
    app[EXPORT_SLOTS] = asyncio.Semaphore(2)
    r = app.router
    r.add_get("/api/v1/calls", search, allow_head=False)
    r.add_get("/api/v1/calls/count", count, allow_head=False)
    r.add_get("/api/v1/calls/export", export, allow_head=False)
    r.add_get("/api/v1/calls/{id}", detail, allow_head=False)
    r.add_get("/api/v1/calls/{id}/audio", audio, allow_head=False)
    r.add_delete("/api/v1/calls/{id}/audio", delete_audio)
    r.add_post("/api/v1/calls/{id}/tags", add_tag)
    r.add_delete("/api/v1/calls/{id}/tags/{tag}", remove_tag)
    r.add_put("/api/v1/calls/{id}/confidential", set_confidential)


_STR_OR_NULL = {"type": ["string", "null"]}
_NUM_OR_NULL = {"type": ["number", "null"]}
openapi.SCHEMAS["CallSummary"] = {"type": "object", "properties": {
    "id": {"type": "string", "format": "uuid"}, "started_at": {"type": "string"}, "ended_at": _STR_OR_NULL,
    "duration": _NUM_OR_NULL, "direction": {"type": "string"}, "caller_number": _STR_OR_NULL,
    "caller_name": _STR_OR_NULL, "called_number": _STR_OR_NULL, "agent": _STR_OR_NULL,
    "consent_mode": {"type": "string"}, "consent": _STR_OR_NULL, "consent_key": _STR_OR_NULL,
    "recording_status": {"type": "string"}, "recording_duration": _NUM_OR_NULL, "confidential": {"type": "boolean"},
    "audio_deleted_at": _STR_OR_NULL, "tags": {"type": "array", "items": {"type": "string"}},
    "agent_name": {"type": ["string", "null"], "description": "the console user of the agent's extension"},
    "transcript": {"$ref": "#/components/schemas/TranscriptSummary"},
    "hits": {"type": "array", "description": "with said: where it was said (at most 5, in time order)",
             "items": {"$ref": "#/components/schemas/SaidHit"}}}}
openapi.SCHEMAS["TranscriptSummary"] = {"type": "object", "properties": {
    "state": {"type": "string", "enum": ["none", "pending", "running", "done", "failed", "skipped"]},
    "progress": _NUM_OR_NULL, "silence_share": _NUM_OR_NULL, "agent_talk_ratio": _NUM_OR_NULL,
    "overtalk_ms": {"type": ["integer", "null"]}, "talk_ms": {"type": ["integer", "null"]}}}
openapi.SCHEMAS["SaidHit"] = {"type": "object", "required": ["seq", "speaker", "offset_ms", "end_ms", "snippet"],
                              "properties": {
    "seq": {"type": "integer"}, "speaker": {"type": "string", "enum": ["caller", "agent", "mixed"]},
    "offset_ms": {"type": "integer", "description": "start of the first matched word: seek the player here"},
    "end_ms": {"type": "integer", "description": "end of the segment"},
    "snippet": {"type": "array", "description": "[text, is_hit] parts: plain text, never HTML",
                "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]}},
    "fuzzy": {"type": "boolean", "description": "found by similar spelling (nothing matched exactly)"}}}
openapi.SCHEMAS["CallDetail"] = {"type": "object", "properties": {
    "id": {"type": "string"}, "evidence": {"type": "object"}, "recording": {"type": "object"},
    "tags": {"type": "array", "items": {"type": "string"}}, "confidential": {"type": "boolean"},
    "legal_hold": {"type": "boolean"}, "parties": {"type": "array", "items": {"type": "object"}},
    "transcript": {"$ref": "#/components/schemas/TranscriptSummary"}},
    "additionalProperties": True}

_PAGE = [openapi.query_param("limit", {"type": "integer", "minimum": 1, "maximum": callquery.MAX_LIMIT}),
         openapi.query_param("cursor", {"type": "string"})]

openapi.operation("get", "/api/v1/calls", summary="Search calls (keyset pagination, newest first)", tags=["calls"],
                  parameters=FILTER_PARAMS + _PAGE, responses={"200": openapi.json_response("a page", {
                      "type": "object", "required": ["items", "next_cursor"], "properties": {
                          "items": {"type": "array", "items": {"$ref": "#/components/schemas/CallSummary"}},
                          "next_cursor": _STR_OR_NULL}})})
openapi.operation("get", "/api/v1/calls/count", summary="Count the calls a search would find", tags=["calls"],
                  parameters=FILTER_PARAMS, responses={"200": openapi.json_response("the count", {
                      "type": "object", "properties": {"count": {"type": "integer"}}})})
openapi.operation("get", "/api/v1/calls/export", summary="Export the filtered calls, streamed (audited)",
                  tags=["calls"],
                  parameters=[openapi.query_param("format", {"type": "string", "enum": ["csv", "json"]}),
                              openapi.query_param("tz", {"type": "string", "maxLength": 64},
                                                  "CSV: the time zone of its local-time columns; default UTC"),
                              *FILTER_PARAMS],
                  responses={"200": {"description": "CSV or a JSON array of CallSummary", "content": {
                      "text/csv": {"schema": {"type": "string"}},
                      "application/json": {"schema": {"type": "array",
                                                      "items": {"$ref": "#/components/schemas/CallSummary"}}}}},
                      "409": {"description": "too many exports running", "content": openapi.ERR},
                      "429": {"description": "this principal already runs an export", "content": openapi.ERR}})
openapi.operation("get", "/api/v1/calls/{id}", summary="One call: consent evidence, recording facts (audited)",
                  tags=["calls"], parameters=[CALL_ID_PARAM],
                  responses={"200": openapi.json_response("the call", {"$ref": "#/components/schemas/CallDetail"}),
                             **NOT_FOUND_RESPONSE})
openapi.operation(
    "get", "/api/v1/calls/{id}/audio", summary="The recording (WAV) with Range support; listen/download audited",
    tags=["calls"], parameters=[CALL_ID_PARAM, openapi.query_param("download", {"type": "string", "enum": ["0", "1"]},
                                                          "1: as an attachment"),
                                {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                                 "description": "one byte range (bytes=a-b, a-, -n); several are ignored"}],
    responses={"200": {"description": "the whole file", "content": {"audio/wav": {"schema": {"type": "string",
                                                                                              "format": "binary"}}}},
               "206": {"description": "the requested range", "content": {"audio/wav": {"schema": {
                   "type": "string", "format": "binary"}}}},
               "409": {"description": "the recording path is a symbolic link: refused, nothing served",
                       "content": openapi.ERR},
               "416": {"description": "range outside the file", "content": openapi.ERR},
               "500": {"description": "the recording is encrypted and does not open with the configured master key "
                                      "(the server log names the key ids)", "content": openapi.ERR},
               "503": {"description": "the recording is in the bucket and the bucket does not answer; try later",
                       "content": openapi.ERR}, **NOT_FOUND_RESPONSE})
openapi.operation("delete", "/api/v1/calls/{id}/audio", summary="Delete the recording; the row keeps who and when",
                  tags=["calls"], parameters=[CALL_ID_PARAM],
                  responses={"200": openapi.json_response("deleted", {"type": "object"}),
                             "409": {"description": "already deleted, no recording, or legal hold",
                                     "content": openapi.ERR},
                             "503": {"description": "the bucket does not answer: nothing was deleted, try later",
                                     "content": openapi.ERR}, **NOT_FOUND_RESPONSE})
_TAGS = openapi.json_response("the call's tags", {"type": "object", "properties": {
    "tags": {"type": "array", "items": {"type": "string"}}}})
openapi.operation("post", "/api/v1/calls/{id}/tags", summary="Tag a call", tags=["calls"], parameters=[CALL_ID_PARAM],
                  request_body=openapi.json_body({"type": "object", "required": ["tag"], "properties": {
                      "tag": {"type": "string", "minLength": 1, "maxLength": 64}}}),
                  responses={"200": _TAGS, "201": _TAGS,
                             "415": {"description": "not JSON", "content": openapi.ERR}, **NOT_FOUND_RESPONSE})
openapi.operation("delete", "/api/v1/calls/{id}/tags/{tag}", summary="Remove a tag", tags=["calls"],
                  parameters=[CALL_ID_PARAM, openapi.path_param("tag")], responses={"200": _TAGS, **NOT_FOUND_RESPONSE})
openapi.operation("put", "/api/v1/calls/{id}/confidential", summary="Mark or unmark a call confidential",
                  tags=["calls"], parameters=[CALL_ID_PARAM],
                  request_body=openapi.json_body({"type": "object", "required": ["confidential"], "properties": {
                      "confidential": {"type": "boolean"}}}),
                  responses={"200": openapi.json_response("done", {"type": "object"}),
                             "415": {"description": "not JSON", "content": openapi.ERR}, **NOT_FOUND_RESPONSE})
