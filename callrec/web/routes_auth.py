"""Log-in, log-out and who am I."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from callrec.access import hash_password, password_needs_rehash, sha256_hex, verify_password
from callrec.store import audit
from callrec.store.db import Db
from callrec.web import openapi
from callrec.web.auth import COOKIE, create_session, principal, public, remote
from callrec.web.common import read_json
from callrec.web.errors import bad_request, json_error
from callrec.web.keys import POOL, SETTINGS

log = logging.getLogger("callrec.http")


class LoginThrottle:
    """Failed log-ins, in PostgreSQL (``login_failures``): every process that serves the API (several
    behind a load balancer) sees the same failures, so a guesser gains nothing by switching between them.

    - Per user name *and* address (``user:<name>@<address>``): the first ``free`` failures cost
      nothing; after the n-th, the next attempt from that address for that user waits
      ``delay * 2**(n - free)`` seconds after the last failure, at most ``max_delay`` (30 s, 60 s,
      ... 15 min).  Failures are remembered for ``memory`` seconds; a log-in that succeeds clears
      them.  The same user from another address is not slowed down.
    - Per address (``remote:<address>``), a higher limit: ``remote_limit`` failures within
      ``window`` seconds, whatever the user names, and that address gets 429 until the oldest ages out.

    The address is the client's (``auth.remote``: ``X-Forwarded-For`` only from ``http.trusted_proxies``).
    Times are the processes' wall clocks (keep the hosts on NTP); ``decide`` is the pure rule."""

    def __init__(self, free: int = 5, delay: float = 30.0, max_delay: float = 900.0, memory: float = 86400.0,
                 remote_limit: int = 50, window: float = 900.0, clock: Callable[[], float] = time.time) -> None:
        self.free, self.delay, self.max_delay, self.memory = free, delay, max_delay, memory
        self.remote_limit, self.window, self.clock = remote_limit, window, clock

    @staticmethod
    def keys(username: str, address: str | None) -> tuple[str, str]:
        return f"user:{username}@{address}", f"remote:{address}"

    def decide(self, pair: str, pair_times: list[float], addr: str, addr_times: list[float],
               now: float) -> tuple[str, float] | None:
        """(the key that throttles, seconds until it lets an attempt through), or None.  The times are those
        of the failures still remembered, oldest first."""
        if len(pair_times) >= self.free:
            left = pair_times[-1] + min(self.delay * 2 ** (len(pair_times) - self.free), self.max_delay) - now
            if left > 0:
                return pair, left
        if len(addr_times) >= self.remote_limit:
            return addr, max(addr_times[0] + self.window - now, 0.0)
        return None

    async def wait(self, db: Db, username: str, address: str | None) -> tuple[str, float] | None:
        now = self.clock()
        pair, addr = self.keys(username, address)
        rows = await db.fetch(
            "SELECT key, extract(epoch FROM failed_at)::float8 AS t FROM login_failures "
            "WHERE (key = $1 AND failed_at > to_timestamp($3::float8 - $4::float8)) "
            "   OR (key = $2 AND failed_at > to_timestamp($3::float8 - $5::float8)) ORDER BY failed_at",
            pair, addr, now, self.memory, self.window)
        return self.decide(pair, [r["t"] for r in rows if r["key"] == pair], addr,
                           [r["t"] for r in rows if r["key"] == addr], now)

    async def failed(self, db: Db, username: str, address: str | None) -> None:
        now = self.clock()
        pair, addr = self.keys(username, address)
        await db.execute(
            "WITH gone AS (DELETE FROM login_failures WHERE key = ANY($1::text[]) "
            "                AND failed_at < to_timestamp($2::float8 - $3::float8)) "
            "INSERT INTO login_failures (key, failed_at) SELECT unnest($1::text[]), to_timestamp($2::float8)",
            [pair, addr], now, max(self.memory, self.window))

    async def succeeded(self, db: Db, username: str, address: str | None) -> None:
        await db.execute("DELETE FROM login_failures WHERE key = $1", self.keys(username, address)[0])

    async def forget_old(self, db: Db) -> None:
        """Failures older than anything the throttle still counts (every API process does it now and then)."""
        await db.execute("DELETE FROM login_failures WHERE failed_at < to_timestamp($1::float8 - $2::float8)",
                         self.clock(), max(self.memory, self.window))


# Throttled log-in attempts are audited aggregated: per throttle key (``user:<name>@<address>`` or
# ``remote:<address>``, the one that blocked) and window of this many seconds, one entry at the
# first attempt (count 1) and one when the window closes with the count of the others.
THROTTLED_AUDIT_WINDOW_S = 300.0
_MAX_NAMES = 20  # distinct user names kept per window (a guesser may try many)


@dataclass
class _Window:
    opened: float  # monotonic
    opened_at: datetime
    actor: str
    remote: str | None
    count: int = 0  # attempts after the first
    names: set[str] = field(default_factory=set)
    names_seen: int = 0


class ThrottledAudit:
    """Aggregates throttled log-in attempts into few audit entries (each throttled attempt used to
    write a row: an unauthenticated flood of the trail).  Pure bookkeeping: the methods return the
    entries (keyword arguments of ``audit.append``) for the caller to write; the sum of their
    ``count`` is the number of throttled attempts.  Bounded: at most ``max_keys`` open windows
    (the oldest is closed, and its entry written, to make room)."""

    def __init__(self, window: float = THROTTLED_AUDIT_WINDOW_S, max_keys: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.max_keys, self.clock = window, max_keys, clock
        self._open: OrderedDict[str, _Window] = OrderedDict()

    def note(self, key: str, username: str, remote_addr: str | None) -> list[dict[str, Any]]:
        now = self.clock()
        out: list[dict[str, Any]] = []
        win = self._open.get(key)
        if win is not None and now - win.opened >= self.window:
            out += self._close(key)
            win = None
        if win is None:
            while len(self._open) >= self.max_keys:
                out += self._close(next(iter(self._open)))
            win = self._open[key] = _Window(now, datetime.now(UTC), username, remote_addr, names={username},
                                            names_seen=1)
            out.append(self._entry(key, win, 1, first=True))
            return out
        win.count += 1
        if username not in win.names:
            win.names_seen += 1
            if len(win.names) < _MAX_NAMES:
                win.names.add(username)
        return out

    def due(self) -> list[dict[str, Any]]:
        """Close the windows that have ended."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        for key in [k for k, w in self._open.items() if now - w.opened >= self.window]:
            out += self._close(key)
        return out

    def close_all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for key in list(self._open):
            out += self._close(key)
        return out

    def _close(self, key: str) -> list[dict[str, Any]]:
        win = self._open.pop(key)
        return [self._entry(key, win, win.count, first=False)] if win.count else []

    def _entry(self, key: str, win: _Window, count: int, *, first: bool) -> dict[str, Any]:
        details: dict[str, Any] = {"reason": "throttled", "key": key, "count": count,
                                   "window_s": self.window, "window_from": win.opened_at}
        if first:
            details["note"] = "the first throttled attempt; the others of this window follow in one entry"
        else:
            details["window_to"] = datetime.now(UTC)
            details["users"] = sorted(win.names)
            details["users_distinct"] = win.names_seen
        return {"actor": win.actor, "action": "login_failed", "details": details, "remote": win.remote}


THROTTLE = web.AppKey("login_throttle", LoginThrottle)
THROTTLED_AUDIT = web.AppKey("login_throttled_audit", ThrottledAudit)


async def _write(pool: asyncpg.Pool, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        await audit.append(pool, **entry)


async def _throttled_audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """Close ended windows now and then, and every open one at shutdown (so no count is lost)."""
    agg = app[THROTTLED_AUDIT]

    async def sweep() -> None:
        while True:
            await asyncio.sleep(agg.window / 4)
            try:
                await _write(app[POOL], agg.due())
                await app[THROTTLE].forget_old(app[POOL])
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("throttled log-ins: audit entry not written: %s", type(exc).__name__)

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    try:
        await _write(app[POOL], agg.close_all())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("throttled log-ins: the last counts were not written to the audit trail: %s",
                    type(exc).__name__)


async def _rehash(pool: asyncpg.Pool, user_id: int, old: str, password: str) -> None:
    """Replace a hash made with older scrypt parameters (the password was just verified).  Only if
    the stored hash is still the one verified: a password changed meanwhile is kept."""
    new = await asyncio.to_thread(hash_password, password)
    try:
        await pool.execute("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3",
                           new, user_id, old)
    except asyncpg.PostgresError as exc:
        # The log-in still succeeds; the grant is in docs/sql/app_role.sql.
        log.warning("could not store the rehashed password of user id %d: %s", user_id, type(exc).__name__)


@public
async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or len(username) > 64 \
            or len(password) > 1024:
        raise bad_request("expected {\"username\": string, \"password\": string}")
    pool = request.app[POOL]
    throttle = request.app[THROTTLE]
    address = remote(request)
    blocked = await throttle.wait(pool, username, address)
    if blocked is not None:
        await _write(pool, request.app[THROTTLED_AUDIT].note(blocked[0], username, address))
        raise json_error(429, "too many failed log-ins; try again later",
                         headers={"Retry-After": str(math.ceil(blocked[1]))})
    row = await pool.fetchrow("SELECT id, name, role, extension, password_hash, disabled FROM users WHERE name = $1",
                              username)
    # scrypt runs in a thread: the event loop also serves live calls.
    ok = await asyncio.to_thread(verify_password, password, row["password_hash"] if row else None)
    if row is None or not ok or row["disabled"]:
        reason = "unknown user" if row is None else ("disabled" if row["disabled"] and ok else "wrong password")
        await audit.append(pool, actor=username, action="login_failed", details={"reason": reason},
                           remote=remote(request))
        await throttle.failed(pool, username, address)
        raise json_error(401, "wrong user name or password")
    if password_needs_rehash(row["password_hash"]):
        await _rehash(pool, row["id"], row["password_hash"], password)
    await throttle.succeeded(pool, username, address)
    hours = request.app[SETTINGS].http.session_hours
    async with pool.acquire() as conn, conn.transaction():
        session_id, csrf = await create_session(conn, row["id"], hours, remote(request))
        await audit.append(conn, actor=row["name"], role=row["role"], action="login", remote=remote(request))
    resp = web.json_response({"user": row["name"], "role": row["role"], "extension": row["extension"],
                              "csrf_token": csrf})
    resp.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/", max_age=int(hours * 3600),
                    secure=request.app[SETTINGS].http.cookie_secure)
    return resp


async def logout(request: web.Request) -> web.Response:
    p = principal(request)
    pool = request.app[POOL]
    session_id = request.cookies.get(COOKIE)
    if p.via == "session" and session_id:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM web_sessions WHERE id_sha256 = $1", sha256_hex(session_id))
            await audit.append(conn, actor=p.name, role=p.role, action="logout", remote=remote(request))
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def me(request: web.Request) -> web.Response:
    p = principal(request)
    return web.json_response({"user": p.name, "role": p.role, "extension": p.extension, "via": p.via})


def setup(app: web.Application) -> None:
    app[THROTTLE] = LoginThrottle()
    app[THROTTLED_AUDIT] = ThrottledAudit()
    app.cleanup_ctx.append(_throttled_audit_ctx)
    app.router.add_post("/api/v1/login", login)
    app.router.add_post("/api/v1/logout", logout)
    app.router.add_get("/api/v1/me", me, allow_head=False)


openapi.SCHEMAS["Me"] = {"type": "object", "required": ["user", "role"], "properties": {
    "user": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "supervisor", "agent", "security",
                                                                    "auditor"]},
    "extension": {"type": ["string", "null"]}, "via": {"type": "string"}}}
openapi.operation(
    "post", "/api/v1/login", summary="Console log-in: sets the callrec_session cookie", public=True, tags=["auth"],
    request_body=openapi.json_body({"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string", "minLength": 1, "maxLength": 64},
        "password": {"type": "string", "maxLength": 1024}}}),
    responses={"200": openapi.json_response("logged in", {"type": "object", "properties": {
        "user": {"type": "string"}, "role": {"type": "string"}, "csrf_token": {"type": "string"}}}),
        "400": {"description": "bad body", "content": openapi.ERR},
        "401": {"description": "wrong user name or password", "content": openapi.ERR},
        "429": {"description": "too many failed log-ins for this user from this address, or from this address; "
                               "`Retry-After` says when to try again", "content": openapi.ERR},
        "413": {"description": "body too large", "content": openapi.ERR},
        "415": {"description": "not JSON", "content": openapi.ERR}})
openapi.operation("post", "/api/v1/logout", summary="End the console session", tags=["auth"],
                  responses={"200": openapi.json_response("logged out", {"type": "object"})})
openapi.operation("get", "/api/v1/me", summary="Who the request acts as", tags=["auth"],
                  responses={"200": openapi.json_response("the principal", {"$ref": "#/components/schemas/Me"})})
