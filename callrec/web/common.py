"""What every route module shares: JSON responses, the request body, call ids, the visible-call
lookup and the call filter (with their OpenAPI descriptions).

A route parses the request with these, calls the service (store, dataops, recording), and
answers with ``respond``.  A call the principal may not see is a 404, the same as a call that
does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from aiohttp import web

from callrec.access import Params, Principal, visible_calls_sql
from callrec.store import callquery
from callrec.store.callquery import FilterError
from callrec.store.db import Db
from callrec.web import openapi
from callrec.web.errors import HiddenCall, bad_request, json_error, not_found
from callrec.web.keys import POOL, SETTINGS

log = logging.getLogger("callrec.http")

# Exports running at once (CSV/JSON and evidence share the slots): each holds a connection and disk.
EXPORT_SLOTS = web.AppKey("export_slots", asyncio.Semaphore)
# Exports running per principal (a user, or a token without a user), across every process serving the API:
# at most EXPORTS_PER_PRINCIPAL, so no one principal, whatever its role, can hold every slot.
EXPORTS_PER_PRINCIPAL = 1

TZ_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$")
_CALL_ID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# --- responses -----------------------------------------------------------------------------------

def audit_window_sweeper(what: str, close: Callable[[asyncpg.Pool, float | None], Awaitable[int]],
                         window: Callable[[web.Application], float]
                         ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that writes the entries of ended audit windows (search pages, denials) now
    and then, and of every open one at shutdown (a window left open by a stop is closed by the next
    start's first sweep)."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        seconds = window(app)

        async def sweep() -> None:
            while True:
                try:
                    await close(app[POOL], seconds)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("%s: window entries not written: %s", what, type(exc).__name__)
                await asyncio.sleep(seconds / 4)

        task = asyncio.create_task(sweep())
        yield
        task.cancel()
        try:
            await close(app[POOL], None)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: the open windows' entries were not written: %s", what, type(exc).__name__)

    return ctx


def check_query(request: web.Request, keys: tuple[str, ...]) -> None:
    """Every query parameter known, given once, without NUL characters (a clear 400 otherwise)."""
    q = request.query
    unknown = set(q) - set(keys)
    if unknown:
        raise bad_request(f"{sorted(unknown)[0]}: unknown parameter")
    for key in keys:
        if len(q.getall(key, [])) > 1:
            raise bad_request(f"{key}: given more than once")
        if "\x00" in q.get(key, ""):
            raise bad_request(f"{key}: contains a NUL character")


def json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def respond(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=json_default))


# --- exports: slots and slow readers -------------------------------------------------------------

@contextlib.asynccontextmanager
async def export_slot(request: web.Request, p: Principal) -> AsyncIterator[None]:
    """One of this process's export slots and this principal's own; 429 when the principal already
    runs EXPORTS_PER_PRINCIPAL exports (in any process serving the API: a PostgreSQL advisory lock
    held by a connection of the export's own, so a process that dies lets it go), 409 when every
    slot of this process is taken."""
    key = f"callrec-export:user:{p.user_id}" if p.user_id is not None else f"callrec-export:name:{p.name}"
    slots = request.app[EXPORT_SLOTS]
    # Not from the pool: the export's own query holds a pooled connection for as long as the lock.
    conn = await asyncpg.connect(request.app[SETTINGS].database.dsn, timeout=10,
                                 server_settings={"application_name": "callrec-api-export-lock"})
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key):
            raise json_error(429, "you already have an export running; wait for it to finish")
        if slots.locked():
            raise json_error(409, "too many exports running; try again later")
        async with slots:
            yield
    finally:
        await conn.close()  # the session's advisory lock goes with it


class ReaderDropped(Exception):
    """A streamed response's client was dropped for taking no data: return the response as it is
    (aiohttp sees the closed connection and logs the request without an error)."""


async def write_or_drop(request: web.Request, resp: web.StreamResponse, data: bytes) -> None:
    """Write a piece of a streamed response; a client that takes none of it for
    ``http.write_timeout`` seconds is dropped (its connection closed, ReaderDropped raised: the
    handler unwinds, ending its transaction, and returns ``resp``), so a stalled reader holds no
    export slot and no database connection."""
    timeout = request.app[SETTINGS].http.write_timeout
    try:
        async with asyncio.timeout(timeout):
            await resp.write(data)
    except TimeoutError:
        log.info("%s %s: the client took no data for %g s; dropped", request.method, request.path, timeout)
        if request.transport is not None:
            request.transport.abort()
        raise ReaderDropped from None


# --- parsing -------------------------------------------------------------------------------------

async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or 400/415."""
    if request.content_type != "application/json":
        raise json_error(415, "expected Content-Type: application/json")
    timeout = request.app[SETTINGS].http.read_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        log.info("%s %s: the request body did not arrive within %g s; dropped", request.method, request.path, timeout)
        exc = json_error(408, f"request body not received within {timeout:g} s")
        exc.force_close()
        raise exc from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body: expected a JSON object")
    return body


def is_call_id(text: str) -> bool:
    """A call id as callrec writes them (a UUID)."""
    return bool(_CALL_ID_RE.match(text))


def call_id_of(request: web.Request) -> str:
    """The ``{id}`` of the path; 404 when it is not a call id (the same answer as an unknown one)."""
    raw = request.match_info["id"]
    if not is_call_id(raw):
        raise not_found()
    return raw.lower()


def time_zone(value: str | None) -> str:
    """An IANA time zone name (the browser's), or UTC; 400 for an unknown one."""
    if value is None:
        return "UTC"
    if not TZ_RE.match(value):
        raise bad_request("tz: expected a time zone name like Europe/Moscow")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad_request(f"tz: unknown time zone {value!r}") from None
    return value


def filter_of(request: web.Request, **kw: Any) -> callquery.CallFilter:
    """The call filter from the query string (``FILTER_PARAMS``); 400 on an unknown or bad parameter."""
    unknown = set(request.query) - set(callquery.FILTER_KEYS) - set(kw.pop("extra_keys", ()))
    if unknown:
        raise bad_request(f"{sorted(unknown)[0]}: unknown parameter")
    try:
        return callquery.parse_filter(lambda key: request.query.getall(key, []),
                                      country=request.app[SETTINGS].search.default_country, **kw)
    except FilterError as exc:
        raise bad_request(str(exc)) from None


# --- the visible-call lookup ---------------------------------------------------------------------

async def visible_call(conn: Db, p: Principal, call_id: str, lock: bool = False) -> asyncpg.Record:
    """The call row if ``p`` may see it; 404 otherwise (unknown and hidden look the same)."""
    params = Params()
    ph = params.add(call_id)
    sql = f"SELECT * FROM calls c WHERE c.id = {ph}::uuid AND {visible_calls_sql(p, params, 'c')}"
    if lock:
        sql += " FOR UPDATE OF c"
    row = await conn.fetchrow(sql, *params.values)
    if row is None:
        raise await not_visible(conn, call_id)
    return row


async def not_visible(conn: Db, call_id: str) -> web.HTTPException:
    """The 404 for a call the principal did not get: ``HiddenCall`` (audited as a denial) when the
    call exists, a plain 404 when it does not.  Both look the same to the client."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM calls WHERE id = $1::uuid)", call_id):
        return HiddenCall(call_id)
    return not_found()


# --- their OpenAPI descriptions ------------------------------------------------------------------

CALL_ID_PARAM = openapi.path_param("id", {"type": "string", "format": "uuid"})
NOT_FOUND_RESPONSE = {"404": {"description": "no such call, or not visible to this principal",
                              "content": openapi.ERR}}

_ISO = {"type": "string", "description": "ISO 8601 time; without an offset it is UTC"}
FILTER_PARAMS = [
    openapi.query_param("from", _ISO, "calls that started at or after"),
    openapi.query_param("to", _ISO, "calls that started before"),
    openapi.query_param("number", {"type": "string", "maxLength": 64}, "caller or called number; * is a wildcard"),
    openapi.query_param("direction", {"type": "string", "enum": list(callquery.DIRECTIONS)}),
    openapi.query_param("agent", {"type": "string", "maxLength": 64}, "the agent's extension"),
    openapi.query_param("consent", {"type": "string", "enum": list(callquery.CONSENTS)}),
    openapi.query_param("recorded", {"type": "boolean"}, "a recording was made (status ready)"),
    openapi.query_param("recording", {"type": "string", "enum": list(callquery.RECORDING_STATUSES)},
                        "the recording's status (failed, missing, empty: the dashboard's problem figures)"),
    openapi.query_param("min_duration", {"type": "number", "minimum": 0}, "call duration, seconds"),
    openapi.query_param("max_duration", {"type": "number", "minimum": 0}, "call duration, seconds"),
    openapi.query_param("tag", {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}},
                        "every given tag (repeatable)", style="form", explode=True),
    openapi.query_param("q", {"type": "string", "maxLength": 100}, "free text in caller, party and agent names"),
    openapi.query_param("said", {"type": "string", "maxLength": 200},
                        'what was said: words (each somewhere in the call, any word form) and "quoted phrases"; '
                        "the list then carries hits per call, and falls back to similar words (fuzzy) when "
                        "nothing matches"),
    openapi.query_param("silence_over", {"type": "number", "minimum": 0, "maximum": 100},
                        "silence over this share of the call, percent"),
    openapi.query_param("agent_talk_over", {"type": "number", "minimum": 0, "maximum": 100},
                        "the agent's share of all talk over this, percent (stereo calls)"),
    openapi.query_param("agent_talk_under", {"type": "number", "minimum": 0, "maximum": 100},
                        "the agent's share of all talk under this, percent (stereo calls)"),
    openapi.query_param("overtalk_over", {"type": "number", "minimum": 0, "maximum": 86400},
                        "both talking at once for longer than this, seconds"),
    openapi.query_param("order", {"type": "string", "enum": ["desc", "asc"]}, "by start time"),
]
