"""Keyword alerts: the alert list (visibility rule, audited like call search) and the alert rules
(read by whoever may search calls; added and deleted by admin and security, audited)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from callrec.config.alerts import AlertRule, build_rule
from callrec.config.fields import ConfigError
from callrec.store import alerts as store
from callrec.store import audit
from callrec.store.callquery import FilterError, parse_time
from callrec.web import openapi
from callrec.web.auth import need, remote
from callrec.web.common import check_query, is_call_id, read_json, respond
from callrec.web.errors import bad_request, json_error, not_found
from callrec.web.keys import POOL, SETTINGS

_KEYS = ("rule", "call_id", "since", "limit", "cursor")
MAX_LIMIT = 500


async def list_alerts(request: web.Request) -> web.Response:
    p = need(request, "calls.search")
    check_query(request, _KEYS)
    q = request.query
    rule = q.get("rule")
    if rule is not None and not 1 <= len(rule) <= 64:
        raise bad_request("rule: expected 1-64 characters")
    call_id = q.get("call_id")
    if call_id is not None and not is_call_id(call_id):
        raise bad_request("call_id: expected a call id (UUID)")
    try:
        since = parse_time("since", q["since"]) if "since" in q else None
    except FilterError as exc:
        raise bad_request(str(exc)) from None
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise bad_request(f"limit: expected a whole number 1-{MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit: expected a whole number 1-{MAX_LIMIT}")
    try:
        cursor = store.decode_cursor(q["cursor"]) if "cursor" in q else None
    except store.CursorError as exc:
        raise bad_request(str(exc)) from None
    pool = request.app[POOL]
    items, next_cursor = await store.list_alerts(pool, p, rule=rule, call_id=call_id, since=since, cursor=cursor,
                                                 limit=limit)
    # Alerts point at calls and what was said in them: pages are audited like call search pages.
    await audit.note_search_page(pool, window_s=request.app[SETTINGS].http.search_audit_window, actor=p.name,
                                 role=p.role, rows=len(items), remote=remote(request), action="alerts_list",
                                 details={"filter": {k: q[k] for k in ("rule", "call_id", "since") if k in q}})
    return respond({"items": items, "next": next_cursor})


def rule_json(rule: AlertRule | dict[str, Any], source: str) -> dict[str, Any]:
    if isinstance(rule, AlertRule):
        return {"name": rule.name, "phrases": list(rule.phrases), "speaker": rule.speaker, "kind": rule.kind,
                "within_s": rule.within_s, "source": source, "created_by": None, "created_at": None}
    return {**{k: rule[k] for k in store.RULE_COLUMNS}, "source": source}


async def list_rules(request: web.Request) -> web.Response:
    need(request, "calls.search")
    own = [rule_json(r, "config") for r in request.app[SETTINGS].alerts.rules]
    names = {r["name"] for r in own}
    api = [rule_json(r, "api") for r in await store.list_rules(request.app[POOL]) if r["name"] not in names]
    return respond({"items": own + api})


async def add_rule(request: web.Request) -> web.Response:
    p = need(request, "alerts.rules")
    body = await read_json(request)
    try:
        rule = build_rule("rule", body)
    except ConfigError as exc:
        raise bad_request(str(exc).removeprefix("rule.")) from None
    if any(r.name == rule.name for r in request.app[SETTINGS].alerts.rules):
        raise json_error(409, "name: a rule of the config file has this name")
    pool = request.app[POOL]
    async with pool.acquire() as conn, conn.transaction():
        for phrase, lexemes in zip(rule.phrases, await store.lexemes(conn, rule.phrases), strict=True):
            if not lexemes:
                raise bad_request(f"phrases: {phrase!r} has only stop words; it would never match")
        row = await store.add_rule(conn, name=rule.name, phrases=rule.phrases, speaker=rule.speaker, kind=rule.kind,
                                   within_s=rule.within_s, created_by=p.name)
        if row is None:
            raise json_error(409, "name: an alert rule of this name exists")
        out = rule_json(row, "api")
        await audit.append(conn, actor=p.name, role=p.role, action="alert_rule_add", remote=remote(request),
                           details={k: out[k] for k in ("name", "phrases", "speaker", "kind", "within_s")})
    return respond(out, status=201)


async def delete_rule(request: web.Request) -> web.Response:
    p = need(request, "alerts.rules")
    name = request.match_info["name"]
    if any(r.name == name for r in request.app[SETTINGS].alerts.rules):
        raise json_error(409, "a rule of the config file: change it there")
    pool = request.app[POOL]
    async with pool.acquire() as conn, conn.transaction():
        row = await store.delete_rule(conn, name)
        if row is None:
            raise not_found("no such alert rule")
        out = rule_json(row, "api")
        await audit.append(conn, actor=p.name, role=p.role, action="alert_rule_delete", remote=remote(request),
                           details={k: out[k] for k in ("name", "phrases", "speaker", "kind", "within_s")})
    return respond({"deleted": out})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/alerts", list_alerts, allow_head=False)
    r.add_get("/api/v1/alert-rules", list_rules, allow_head=False)
    r.add_post("/api/v1/alert-rules", add_rule)
    r.add_delete("/api/v1/alert-rules/{name}", delete_rule)


_STR_OR_NULL = {"type": ["string", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
openapi.SCHEMAS["Alert"] = {"type": "object", "properties": {
    "id": {"type": "integer"}, "rule": {"type": "string"}, "call_id": {"type": "string", "format": "uuid"},
    "kind": {"type": "string", "enum": ["said", "not_said"]}, "phrase": {"type": "string"},
    "speaker": {"type": ["string", "null"], "enum": ["caller", "agent", "mixed", "any", None]},
    "offset_ms": _INT_OR_NULL, "created_at": {"type": "string"}}}
openapi.SCHEMAS["AlertRule"] = {"type": "object", "properties": {
    "name": {"type": "string"}, "phrases": {"type": "array", "items": {"type": "string"}},
    "speaker": {"type": "string", "enum": ["any", "caller", "agent"]},
    "kind": {"type": "string", "enum": ["said", "not_said"]}, "within_s": _INT_OR_NULL,
    "source": {"type": "string", "enum": ["config", "api"]}, "created_by": _STR_OR_NULL, "created_at": _STR_OR_NULL}}
_RULE = {"$ref": "#/components/schemas/AlertRule"}
openapi.operation(
    "get", "/api/v1/alerts", summary="Keyword alerts (newest first, keyset pages), of calls the caller may see",
    tags=["alerts"],
    parameters=[openapi.query_param("rule", {"type": "string", "minLength": 1, "maxLength": 64}),
                openapi.query_param("call_id", {"type": "string", "format": "uuid"}),
                openapi.query_param("since", {"type": "string"}, "ISO 8601: alerts raised at or after this time"),
                openapi.query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                openapi.query_param("cursor", {"type": "string"}, "`next` of the previous page")],
    responses={"200": openapi.json_response("a page", {"type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
        "next": _STR_OR_NULL}})})
openapi.operation("get", "/api/v1/alert-rules", summary="Keyword alert rules: the config file's and the API's",
                  tags=["alerts"], responses={"200": openapi.json_response("the rules", {
                      "type": "object", "properties": {"items": {"type": "array", "items": _RULE}}})})
openapi.operation(
    "post", "/api/v1/alert-rules", summary="Add a keyword alert rule (admin, security)", tags=["alerts"],
    request_body=openapi.json_body({"type": "object", "required": ["name", "phrases"], "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
        "phrases": {"type": "array", "minItems": 1, "maxItems": 100,
                    "items": {"type": "string", "minLength": 1, "maxLength": 200}},
        "speaker": {"type": "string", "enum": ["any", "caller", "agent"]},
        "kind": {"type": "string", "enum": ["said", "not_said"]},
        "within_s": {"type": "integer", "minimum": 1, "maximum": 86400}}}),
    responses={"201": openapi.json_response("added", _RULE),
               "409": {"description": "a rule of that name exists (in the config file or the API's)",
                       "content": openapi.ERR},
               "415": {"description": "not JSON", "content": openapi.ERR}})
openapi.operation(
    "delete", "/api/v1/alert-rules/{name}", summary="Delete a keyword alert rule added through the API; its alerts "
    "stay (admin, security)", tags=["alerts"], parameters=[openapi.path_param("name")],
    responses={"200": openapi.json_response("deleted", {"type": "object", "properties": {"deleted": _RULE}}),
               "404": {"description": "no such rule", "content": openapi.ERR},
               "409": {"description": "a rule of the config file", "content": openapi.ERR}})
