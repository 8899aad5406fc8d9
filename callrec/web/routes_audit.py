"""The audit trail, for auditors and admins."""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import web

from callrec.store import audit
from callrec.store.callquery import FilterError, parse_time
from callrec.web import openapi
from callrec.web.auth import need
from callrec.web.common import check_query, is_call_id, respond
from callrec.web.errors import bad_request
from callrec.web.keys import POOL

_KEYS = ("call_id", "caller", "agent", "actor", "action", "from", "to", "limit", "cursor")
# A piece of a call id, as people copy one from a screen or a ticket: at least 4 of its characters.
_CALL_ID_PART = re.compile(r"^[0-9a-fA-F-]{4,36}$")


def _cursor(value: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        if not raw.startswith("a:"):
            raise ValueError
        n = int(raw[2:])
        if not 0 < n < 2**63:
            raise ValueError
        return n
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_request("cursor: not a cursor this API returned") from None


async def search(request: web.Request) -> web.Response:
    p = need(request, "audit.search")
    check_query(request, _KEYS)
    q = request.query
    call_id, part = q.get("call_id"), None
    if call_id is not None and not is_call_id(call_id):
        if not _CALL_ID_PART.match(call_id):
            raise bad_request("call_id: expected a call id or at least 4 of its characters (0-9, a-f, -)")
        call_id, part = None, call_id
    try:
        since = parse_time("from", q["from"]) if "from" in q else None
        until = parse_time("to", q["to"]) if "to" in q else None
    except FilterError as exc:
        raise bad_request(str(exc)) from None
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise bad_request("limit: expected a whole number 1-500") from None
    if not 1 <= limit <= 500:
        raise bad_request("limit: expected a whole number 1-500")
    for key in ("actor", "action", "caller"):
        if key in q and not 1 <= len(q[key]) <= 200:
            raise bad_request(f"{key}: expected 1-200 characters")
    if "agent" in q and not 1 <= len(q["agent"]) <= 64:
        raise bad_request("agent: expected 1-64 characters")
    before = _cursor(q["cursor"]) if "cursor" in q else None
    rows = await audit.search(request.app[POOL], p, call_id=call_id, actor=q.get("actor"), action=q.get("action"),
                              since=since, until=until, before_id=before, limit=limit + 1,
                              call_id_part=part, caller=q.get("caller"), agent=q.get("agent"))
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = base64.urlsafe_b64encode(f"a:{rows[-1]['id']}".encode()).decode().rstrip("=") if more else None
    return respond({"items": rows, "next_cursor": cursor})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/audit", search, allow_head=False)


openapi.SCHEMAS["AuditEntry"] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "at": {"type": "string"}, "actor": {"type": "string"},
    "role": {"type": ["string", "null"]}, "action": {"type": "string"}, "call_id": {"type": ["string", "null"]},
    "details": {"type": "object"}, "remote": {"type": ["string", "null"]},
    "call": {"type": ["object", "null"], "description": "who the call was between (null: no call, or erased)",
             "properties": {k: {"type": ["string", "null"]} for k in (
                 "caller_number", "caller_name", "called_number", "agent", "direction")}}}}
openapi.operation(
    "get", "/api/v1/audit", summary="Search the audit trail (newest first)", tags=["audit"],
    parameters=[openapi.query_param("call_id", {"type": "string", "pattern": "^[0-9a-fA-F-]{4,36}$"},
                                    "a call id, or a piece of one (at least 4 characters)"),
                openapi.query_param("caller", {"type": "string", "minLength": 1, "maxLength": 200},
                                    "the end of the caller's number (digits), or a piece of their name"),
                openapi.query_param("agent", {"type": "string", "minLength": 1, "maxLength": 64},
                                    "the agent's extension"),
                openapi.query_param("actor", {"type": "string", "minLength": 1, "maxLength": 200}),
                openapi.query_param("action", {"type": "string", "minLength": 1, "maxLength": 200}),
                openapi.query_param("from", {"type": "string"}, "ISO 8601"),
                openapi.query_param("to", {"type": "string"}, "ISO 8601"),
                openapi.query_param("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                openapi.query_param("cursor", {"type": "string"})],
    responses={"200": openapi.json_response("a page", {"type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
        "next_cursor": {"type": ["string", "null"]}}})})
