"""The console's own endpoints: the dashboard's figures and each user's saved searches.

The dashboard counts calls under the one visibility rule (store/dashboard.py).  A saved search is a
calls-list query string: it is parsed as GET /api/v1/calls would parse it before it is stored, so a
stored search always runs; creating, renaming and deleting one is audited.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import asyncpg
from aiohttp import web

from callrec.access import Principal
from callrec.store import audit, callquery, dashboard
from callrec.store.callquery import FilterError, parse_time
from callrec.web import openapi
from callrec.web.auth import need, remote
from callrec.web.common import check_query, read_json, respond, time_zone
from callrec.web.errors import bad_request, json_error, not_found
from callrec.web.keys import POOL

MAX_RANGE = timedelta(days=366 * 2)
MAX_SAVED = 100  # per user
_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f-\x9f]{1,80}$")
_SAVED_ID_RE = re.compile(r"^[1-9][0-9]{0,17}$")
# What a saved search may hold: the list's filters and its page size; never a cursor (a place in one result).
SAVED_KEYS = tuple(k for k in callquery.FILTER_KEYS if k != "cursor")


# --- dashboard ------------------------------------------------------------------------------------

async def get_dashboard(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    check_query(request, ("from", "to", "tz"))
    q = request.query
    tz = time_zone(q.get("tz"))
    try:
        until = parse_time("to", q["to"]) if "to" in q else datetime.now(UTC)
        since = parse_time("from", q["from"]) if "from" in q else until - timedelta(days=30)
    except FilterError as exc:
        raise bad_request(str(exc)) from None
    if since >= until:
        raise bad_request("from: must be before to")
    if until - since > MAX_RANGE:
        raise bad_request(f"from: at most {MAX_RANGE.days} days before to")
    return respond(await dashboard.figures(request.app[POOL], p, since, until, tz))


# --- saved searches -------------------------------------------------------------------------------

def _saved_query(value: Any) -> str:
    """A calls-list query string, checked as the list would check it (no cursor); normalised spacing."""
    if not isinstance(value, str) or len(value) > 2000:
        raise bad_request("query: expected a query string of at most 2000 characters")
    text = value.removeprefix("?")
    try:
        parsed = parse_qs(text, keep_blank_values=False, strict_parsing=bool(text), max_num_fields=60)
    except ValueError:
        raise bad_request("query: not a query string (key=value&...)") from None
    unknown = set(parsed) - set(SAVED_KEYS)
    if unknown:
        raise bad_request(f"query: {sorted(unknown)[0]}: unknown parameter")
    try:
        callquery.parse_filter(lambda key: parsed.get(key, []))
    except FilterError as exc:
        raise bad_request(f"query: {exc}") from None
    return text


def _saved_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value != value.strip():
        raise bad_request("name: expected 1-80 printable characters without surrounding spaces")
    return value


def _saved_id(request: web.Request) -> int:
    raw = request.match_info["search_id"]
    if not _SAVED_ID_RE.match(raw):
        raise bad_request("search_id: expected a saved search id (a whole number)")
    return int(raw)


_SAVED_COLUMNS = "id, name, query, created_at, updated_at"


def _owner(p: Principal) -> str:
    return p.name


async def list_saved(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    check_query(request, ())
    rows = await request.app[POOL].fetch(
        f"SELECT {_SAVED_COLUMNS} FROM saved_searches WHERE owner = $1 ORDER BY lower(name), id", _owner(p))
    return respond({"items": [dict(r) for r in rows]})


async def add_saved(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    body = await read_json(request)
    name, query = _saved_name(body.get("name")), _saved_query(body.get("query"))
    async with request.app[POOL].acquire() as conn, conn.transaction():
        # Serialised per owner: two saves at once cannot pass the cap together.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('saved_searches:' || $1))", _owner(p))
        if await conn.fetchval("SELECT count(*) FROM saved_searches WHERE owner = $1", _owner(p)) >= MAX_SAVED:
            raise json_error(409, f"at most {MAX_SAVED} saved searches; delete one first")
        row = await conn.fetchrow(
            f"INSERT INTO saved_searches (owner, name, query) VALUES ($1, $2, $3) "
            f"ON CONFLICT (owner, name) DO NOTHING RETURNING {_SAVED_COLUMNS}", _owner(p), name, query)
        if row is None:
            raise json_error(409, "name: you have a saved search of this name")
        await audit.append(conn, actor=p.name, role=p.role, action="saved_search_add", remote=remote(request),
                           details={"id": row["id"], "name": name, "query": query})
    return respond(dict(row), status=201)


async def update_saved(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    search_id = _saved_id(request)
    body = await read_json(request)
    unknown = set(body) - {"name", "query"}
    if unknown or not body:
        raise bad_request(f"{sorted(unknown)[0]}: unknown field" if unknown else "expected name and/or query")
    name = _saved_name(body["name"]) if "name" in body else None
    query = _saved_query(body["query"]) if "query" in body else None
    async with request.app[POOL].acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                f"UPDATE saved_searches SET name = COALESCE($3, name), query = COALESCE($4, query), "
                f"updated_at = now() WHERE id = $1 AND owner = $2 RETURNING {_SAVED_COLUMNS}",
                search_id, _owner(p), name, query)
        except asyncpg.UniqueViolationError:  # another of this user's searches has the name
            raise json_error(409, "name: you have a saved search of this name") from None
        if row is None:
            raise not_found("no such saved search")
        await audit.append(conn, actor=p.name, role=p.role, action="saved_search_update", remote=remote(request),
                           details={"id": search_id, "name": row["name"], "query": row["query"]})
    return respond(dict(row))


async def delete_saved(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    search_id = _saved_id(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"DELETE FROM saved_searches WHERE id = $1 AND owner = $2 "
                                  f"RETURNING {_SAVED_COLUMNS}", search_id, _owner(p))
        if row is None:
            raise not_found("no such saved search")
        await audit.append(conn, actor=p.name, role=p.role, action="saved_search_delete", remote=remote(request),
                           details={"id": search_id, "name": row["name"], "query": row["query"]})
    return respond({"deleted": dict(row)})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/dashboard", get_dashboard, allow_head=False)
    r.add_get("/api/v1/saved-searches", list_saved, allow_head=False)
    r.add_post("/api/v1/saved-searches", add_saved)
    r.add_patch("/api/v1/saved-searches/{search_id}", update_saved)
    r.add_delete("/api/v1/saved-searches/{search_id}", delete_saved)


# --- OpenAPI --------------------------------------------------------------------------------------

_COUNT = {"type": "integer", "minimum": 0}
_COUNTS = {"type": "object", "additionalProperties": _COUNT}
openapi.SCHEMAS["Dashboard"] = {"type": "object", "properties": {
    "from": {"type": "string"}, "to": {"type": "string"}, "tz": {"type": "string"},
    "total": _COUNT, "recorded": _COUNT, "share_recorded": {"type": ["number", "null"]},
    "consent": {**_COUNTS, "description": "calls per consent outcome (none: not settled)"},
    "recordings": {**_COUNTS, "description": "calls per recording status"},
    "problems": {**_COUNTS, "description": "failed, missing, empty and unclosed recordings"},
    "days": {"type": "array", "items": {"type": "object", "properties": {
        "day": {"type": "string", "format": "date"}, "total": _COUNT, "recorded": _COUNT, "consent": _COUNTS}}},
    "agents": {"type": "array", "description": f"the {dashboard.MAX_AGENTS} busiest agents", "items": {
        "type": "object", "properties": {"agent": {"type": "string"}, "name": {"type": ["string", "null"]},
                                         "calls": _COUNT, "declined": _COUNT, "decline_rate": {"type": "number"}}}},
    "alerts": {"type": "object", "properties": {"total": _COUNT, "rules": {"type": "array", "items": {
        "type": "object", "properties": {"rule": {"type": "string"}, "alerts": _COUNT, "calls": _COUNT}}}}}}}
openapi.SCHEMAS["SavedSearch"] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"},
    "query": {"type": "string", "description": "the calls list's query string (GET /api/v1/calls), no cursor"},
    "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}
_SAVED = {"$ref": "#/components/schemas/SavedSearch"}
_SAVED_BODY = {"name": {"type": "string", "minLength": 1, "maxLength": 80},
               "query": {"type": "string", "maxLength": 2000}}
_SAVED_ID = openapi.path_param("search_id", {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"})
_NO_SAVED = {"description": "no such saved search of yours", "content": openapi.ERR}
_CONFLICT = {"description": "a saved search of this name exists, or the cap is reached", "content": openapi.ERR}
openapi.operation(
    "get", "/api/v1/dashboard", tags=["console"],
    summary="Dashboard figures of the calls the caller may see: per day and consent outcome, share recorded, "
            "recording problems, per agent, speech alerts",
    parameters=[openapi.query_param("from", {"type": "string"}, "ISO 8601; default: 30 days before to"),
                openapi.query_param("to", {"type": "string"}, "ISO 8601, exclusive; default: now"),
                openapi.query_param("tz", {"type": "string", "maxLength": 64},
                                    "IANA time zone the days are counted in; default UTC")],
    responses={"200": openapi.json_response("the figures", {"$ref": "#/components/schemas/Dashboard"})})
openapi.operation("get", "/api/v1/saved-searches", tags=["console"], summary="Your saved call searches",
                  responses={"200": openapi.json_response("yours", {"type": "object", "properties": {
                      "items": {"type": "array", "items": _SAVED}}})})
openapi.operation(
    "post", "/api/v1/saved-searches", tags=["console"], summary="Save a call search (audited)",
    request_body=openapi.json_body({"type": "object", "required": ["name", "query"], "properties": _SAVED_BODY}),
    responses={"201": openapi.json_response("saved", _SAVED), "409": _CONFLICT,
               "415": {"description": "not JSON", "content": openapi.ERR}})
openapi.operation(
    "patch", "/api/v1/saved-searches/{search_id}", tags=["console"], parameters=[_SAVED_ID],
    summary="Rename a saved search or change its query (audited)",
    request_body=openapi.json_body({"type": "object", "properties": _SAVED_BODY}),
    responses={"200": openapi.json_response("changed", _SAVED), "404": _NO_SAVED, "409": _CONFLICT,
               "415": {"description": "not JSON", "content": openapi.ERR}})
openapi.operation(
    "delete", "/api/v1/saved-searches/{search_id}", tags=["console"], parameters=[_SAVED_ID],
    summary="Delete a saved search (audited)",
    responses={"200": openapi.json_response("deleted", {"type": "object", "properties": {"deleted": _SAVED}}),
               "404": _NO_SAVED})
