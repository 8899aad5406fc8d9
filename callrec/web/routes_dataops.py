"""Data-ops routes: legal hold, retention status, evidence export (zip with a signed manifest).

Same conventions as routes_calls: permissions checked first (403), calls found only through the
visibility rule (404 for hidden and unknown alike), every change audited in its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from callrec.access import Params, visible_calls_sql
from callrec.dataops import evidence
from callrec.dataops.deletion import set_legal_hold
from callrec.dataops.retention import count_due
from callrec.dataops.transcript_export import attach_transcripts
from callrec.storage import StorageUnavailable
from callrec.store import audit, callquery
from callrec.web import openapi
from callrec.web.auth import need, principal, remote
from callrec.web.common import (
    CALL_ID_PARAM,
    FILTER_PARAMS,
    NOT_FOUND_RESPONSE,
    ReaderDropped,
    call_id_of,
    export_slot,
    filter_of,
    is_call_id,
    not_visible,
    read_json,
    respond,
    write_or_drop,
)
from callrec.web.errors import bad_request, forbidden, json_error
from callrec.web.keys import POOL, SETTINGS, STORAGE

# Who may read the retention status (config and counts, no call data).
RETENTION_ROLES = frozenset({"admin", "security", "auditor"})
# Evidence exports carry audio: at most this many calls per request.
EVIDENCE_MAX = 500
CHUNK = 256 * 1024

log = logging.getLogger("callrec.web")


async def put_legal_hold(request: web.Request) -> web.Response:
    p = need(request, "calls.legal_hold")
    call_id = call_id_of(request)
    body = await read_json(request)
    hold = body.get("legal_hold")
    reason = body.get("reason")
    if not isinstance(hold, bool):
        raise bad_request("legal_hold: expected true or false")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500 or "\x00" in reason):
        raise bad_request("reason: expected a string of at most 500 characters")
    if hold and not (reason or "").strip():
        raise bad_request("reason: required when setting a legal hold (case or request reference)")
    params = Params()
    visible = visible_calls_sql(p, params, "c")
    async with request.app[POOL].acquire() as conn:
        out = await set_legal_hold(conn, call_id, hold, actor=p, reason=reason, remote=remote(request),
                                   visible_sql=visible, visible_args=params.values)
    if out is None:
        raise await not_visible(request.app[POOL], call_id)
    return respond(out)


async def retention_status(request: web.Request) -> web.Response:
    p = principal(request)
    if p.role not in RETENTION_ROLES:
        raise forbidden()
    r = request.app[SETTINGS].retention
    pool = request.app[POOL]
    counts = await count_due(pool, r)
    last = await pool.fetchrow("SELECT * FROM retention_runs WHERE NOT dry_run ORDER BY id DESC LIMIT 1")
    held = await pool.fetchval("SELECT count(*) FROM calls WHERE legal_hold")
    return respond({
        "audio_days": r.audio_days, "metadata_days": r.metadata_days, "enabled": r.enabled, "interval": r.interval,
        "rules": [{"rule": x.rule, "audio_days": r.for_rule(x.rule)[0], "metadata_days": r.for_rule(x.rule)[1]}
                  for x in r.rules],
        "audio_due": counts["audio_due"], "metadata_due": counts["metadata_due"],
        "held_due": counts["held"], "legal_holds": held,
        "last_run": None if last is None else {k: last[k] for k in (
            "started_at", "finished_at", "actor", "audio_deleted", "anonymized", "held_skipped", "errors")},
    })


def _transcripts_flag(request: web.Request) -> bool:
    """``transcripts=true``: each call's transcript goes into the export (transcripts/<id>.json, signed)."""
    values = request.query.getall("transcripts", [])
    if not values:
        return False
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise bad_request("transcripts: expected true or false")
    return values[0] == "true"


def _call_ids(request: web.Request) -> list[str] | None:
    """``call=<id>`` (repeatable): only these calls (one call's page), still under every filter and the
    visibility rule; None when not given."""
    values = request.query.getall("call", [])
    if not values:
        return None
    if len(values) > EVIDENCE_MAX:
        raise bad_request(f"call: at most {EVIDENCE_MAX}")
    for value in values:
        if not is_call_id(value):
            raise bad_request("call: expected a call id")
    return sorted({v.lower() for v in values})


async def evidence_export(request: web.Request) -> web.StreamResponse:
    p = need(request, "calls.audio")
    # cursor (with limit and order): exactly the page of a search the console shows.
    f = filter_of(request, max_limit=EVIDENCE_MAX, default_limit=100, extra_keys=("transcripts", "call"))
    with_transcripts = _transcripts_flag(request)
    only = _call_ids(request)
    settings = request.app[SETTINGS]
    try:
        key = await asyncio.to_thread(evidence.load_private_key, settings.integrity.signing_key)
    except evidence.KeyError_:
        raise json_error(409, "no signing key configured on the server (integrity.signing_key)") from None
    async with export_slot(request, p):
        pool = request.app[POOL]
        try:
            await callquery.prepare(pool, f)  # said: which words are searchable (a 400 when none)
        except callquery.FilterError as exc:
            raise bad_request(str(exc)) from None
        sql, args = callquery.search_sql(f, p, limit=f.limit, ids=only)
        ids = [str(r["id"]) for r in await callquery.fetch_custom(pool, sql, *args)]
        docs = await evidence.call_documents(pool, ids)
        if with_transcripts:
            await attach_transcripts(pool, docs)
        local, cap = request.app[STORAGE], settings.integrity.evidence_max_bytes
        try:
            # From the rows and a stat of each file: refused before any audio is read.
            await asyncio.to_thread(evidence.check_size, docs, local, cap)
        except evidence.TooLarge as exc:
            raise json_error(413, str(exc)) from None
        # The zip is written straight into one temporary file (the audio once, nothing staged
        # beside it), then sent with its length and the manifest's hash known up front.
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix="callrec-evidence-", suffix=".zip")
        target = Path(name)
        try:
            def build() -> evidence.ExportResult:
                with os.fdopen(fd, "wb") as fh:
                    return evidence.write_zip(fh, docs, local, purpose="evidence_export", created_by=p.name,
                                              selection={"filter": f.describe(), "limit": f.limit,
                                                         "calls": only}, key=key,
                                              prompts=(settings.notice.prompts_dir,
                                                       settings.notice.local_prompts_path),
                                              max_bytes=cap)

            try:
                result = await asyncio.to_thread(build)
            except evidence.TooLarge as exc:  # a file grew after the check
                raise json_error(413, str(exc)) from None
            except StorageUnavailable as exc:
                log.warning("evidence export: recording storage unavailable: %s", exc)
                raise json_error(503, "the recording storage is unavailable; try again later") from None
            async with pool.acquire() as conn, conn.transaction():
                for call_id in ids:
                    await audit.append(conn, actor=p.name, role=p.role, action="evidence_export", call_id=call_id,
                                       details={"manifest_sha256": result.manifest_sha256,
                                                "transcripts": with_transcripts}, remote=remote(request))
                await audit.append(conn, actor=p.name, role=p.role, action="export",
                                   details={"format": "evidence-zip", "filter": f.describe(), "calls": len(ids),
                                            "call_ids": only, "transcripts": with_transcripts,
                                            "recordings": result.files, "excluded": result.excluded,
                                            "manifest_sha256": result.manifest_sha256}, remote=remote(request))
            size = (await asyncio.to_thread(target.stat)).st_size
            resp = web.StreamResponse(headers={
                "Content-Type": "application/zip", "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="evidence-{datetime.now():%Y%m%d-%H%M%S}.zip"',
                "X-Manifest-SHA256": result.manifest_sha256})
            await resp.prepare(request)
            fh = await asyncio.to_thread(open, target, "rb")
            try:
                while chunk := await asyncio.to_thread(fh.read, CHUNK):
                    await write_or_drop(request, resp, chunk)
            except ReaderDropped:
                return resp
            finally:
                await asyncio.to_thread(fh.close)
            await resp.write_eof()
            return resp
        finally:
            await asyncio.to_thread(target.unlink, True)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_put("/api/v1/calls/{id}/legal-hold", put_legal_hold)
    r.add_get("/api/v1/retention", retention_status, allow_head=False)
    r.add_get("/api/v1/calls/export/evidence", evidence_export, allow_head=False)


_HOLD: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "string"}, "legal_hold": {"type": "boolean"}, "legal_hold_by": {"type": "string"},
    "legal_hold_at": {"type": "string"}, "legal_hold_reason": {"type": ["string", "null"]},
    "audio_deleted_at": {"type": ["string", "null"]}, "anonymized_at": {"type": ["string", "null"]}}}
openapi.operation(
    "put", "/api/v1/calls/{id}/legal-hold", summary="Set or release a legal hold (stops every deletion)",
    tags=["retention"], parameters=[CALL_ID_PARAM],
    request_body=openapi.json_body({"type": "object", "required": ["legal_hold"], "properties": {
        "legal_hold": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "maxLength": 500,
                   "description": "required when setting: the case or request reference"}}}),
    responses={"200": openapi.json_response("the hold as it now stands", _HOLD),
               "415": {"description": "not JSON", "content": openapi.ERR}, **NOT_FOUND_RESPONSE})
openapi.operation(
    "get", "/api/v1/retention", summary="Retention settings, what is due, what legal holds keep, the last run",
    tags=["retention"], responses={"200": openapi.json_response("status", {"type": "object"})})
openapi.operation(
    "get", "/api/v1/calls/export/evidence",
    summary="Selected calls with their audio and an Ed25519-signed manifest, as a zip (audited)",
    tags=["calls"],
    parameters=[*FILTER_PARAMS, openapi.query_param("limit", {"type": "integer", "minimum": 1,
                                                             "maximum": EVIDENCE_MAX}, "most calls (default 100)"),
                openapi.query_param("cursor", {"type": "string"},
                                    "a next_cursor of GET /api/v1/calls: the same page of that search"),
                openapi.query_param("call", {"type": "array", "maxItems": EVIDENCE_MAX,
                                             "items": {"type": "string", "format": "uuid"}},
                                    "only these calls (repeatable), under the filters and the visibility rule"),
                openapi.query_param("transcripts", {"type": "boolean"},
                                    "include each call's transcript (transcripts/<call id>.json, in the manifest)")],
    responses={"200": {"description": "zip: manifest.json, manifest.json.sig, public-key.pem, SHA256SUMS, audio/",
                       "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
               "409": {"description": "no signing key configured, or too many exports running",
                       "content": openapi.ERR},
               "413": {"description": "the selected recordings add up to more than integrity.evidence_max_bytes "
                                      "(refused before any audio is read)", "content": openapi.ERR},
               "503": {"description": "a recording is in the bucket and the bucket does not answer; try later",
                       "content": openapi.ERR}})
