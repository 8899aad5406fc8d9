"""Authentication (console sessions, bearer tokens), CSRF, and per-request principals.

- ``Authorization: Bearer <token>``: an API token (sha256 looked up; never from a query parameter).
  If the header is present it must be valid: no falling back to the cookie.
- Cookie ``callrec_session``: a console session (sha256 stored).  Mutating requests must send
  ``X-CSRF-Token`` (the value /login returned), compared by hash in constant time.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from callrec.access import Principal, new_secret, sha256_hex
from callrec.store.db import Db
from callrec.web.errors import forbidden, json_error
from callrec.web.keys import CLIENT_ADDRESS, POOL, PRINCIPAL, SETTINGS

log = logging.getLogger("callrec.http")

COOKIE = "callrec_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths served without authentication besides handlers marked @public (the console's static files;
# its pages then log in through /api/v1/login).  Extend, don't replace.
PUBLIC_PATH_PREFIXES: list[str] = ["/console/"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def public(handler: Handler) -> Handler:
    """Mark a route as reachable without authentication."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


def principal(request: web.Request) -> Principal:
    p = request.get(PRINCIPAL)
    if p is None:  # only reachable from a public handler by mistake
        raise json_error(401, "authentication required")
    return p


def need(request: web.Request, permission: str) -> Principal:
    """The principal, or 403 when the role lacks the permission (checked before any call lookup,
    so a 403 never tells whether a call exists)."""
    p = principal(request)
    if not p.may(permission):
        raise forbidden()
    return p


def remote(request: web.Request) -> str | None:
    """The client's address: the peer's, or, when the peer is one of ``http.trusted_proxies``, the
    address ``X-Forwarded-For`` names (read from the right: the first hop that is not a trusted
    proxy; a client can prepend anything it likes, so entries left of that are never believed)."""
    peer = request.remote
    settings = request.config_dict.get(SETTINGS)
    if peer is None or settings is None or not settings.http.trusted_proxies:
        return peer
    return client_address(peer, request.headers.getall("X-Forwarded-For", []),
                          _networks(settings.http.trusted_proxies))


def client_address(peer: str, forwarded: list[str], trusted: tuple[Any, ...]) -> str:
    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for value in forwarded for h in value.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage: believe no further
        client = hop
        if not is_trusted(hop):
            break
    return client


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies)


async def token_principal(pool: asyncpg.Pool, token: str) -> Principal | None:
    row = await pool.fetchrow(
        """SELECT t.id, t.name, t.role, t.last_used_at, u.id AS user_id, u.name AS user_name, u.extension
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id
            WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL
              AND (t.expires_at IS NULL OR t.expires_at > now())
              AND (u.id IS NULL OR NOT u.disabled)""",
        sha256_hex(token))
    if row is None:
        return None
    now = datetime.now(UTC)
    if row["last_used_at"] is None or now - row["last_used_at"] > timedelta(minutes=1):
        # At most one write a minute per token: last use is for spotting stale tokens, not an audit.
        await pool.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row["id"])
    name = f"{row['user_name']}(token:{row['name']})" if row["user_name"] else f"token:{row['name']}"
    return Principal(name=name, role=row["role"], extension=row["extension"], user_id=row["user_id"],
                     token_id=row["id"], via="token")


async def session_principal(pool: asyncpg.Pool, session_id: str) -> Principal | None:
    row = await pool.fetchrow(
        """SELECT s.csrf_sha256, u.id, u.name, u.role, u.extension
             FROM web_sessions s JOIN users u ON u.id = s.user_id
            WHERE s.id_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled""",
        sha256_hex(session_id))
    if row is None:
        return None
    return Principal(name=row["name"], role=row["role"], extension=row["extension"], user_id=row["id"],
                     via="session", csrf_sha256=row["csrf_sha256"])


async def create_session(pool: Db, user_id: int, hours: float,
                         remote_addr: str | None) -> tuple[str, str]:
    """A new session: returns (session id for the cookie, CSRF token); both stored hashed only."""
    session_id, csrf = new_secret(), new_secret()
    await pool.execute(
        "INSERT INTO web_sessions (id_sha256, user_id, csrf_sha256, expires_at, remote) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)",
        sha256_hex(session_id), user_id, sha256_hex(csrf), float(hours * 3600), remote_addr)
    # Expired sessions go when someone logs in: no background job needed.
    await pool.execute("DELETE FROM web_sessions WHERE expires_at < now() - interval '1 day'")
    return session_id, csrf


async def _authenticate(request: web.Request) -> Principal | None:
    pool = request.app[POOL]
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200:
            raise json_error(401, "Authorization: expected 'Bearer <token>'",
                             headers={"WWW-Authenticate": 'Bearer realm="callrec"'})
        p = await token_principal(pool, token)
        if p is None:
            raise json_error(401, "invalid, expired or revoked token",
                             headers={"WWW-Authenticate": 'Bearer realm="callrec"'})
        return p
    session_id = request.cookies.get(COOKIE)
    if session_id and len(session_id) <= 200:
        p = await session_principal(pool, session_id)
        if p is not None and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sha256_hex(sent), p.csrf_sha256 or ""):
                raise forbidden(f"missing or wrong {CSRF_HEADER} header")
        return p
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    client = remote(request)
    if client is not None:
        request[CLIENT_ADDRESS] = client
    target: Any = getattr(request.match_info, "handler", handler)
    if "token" in request.query or "access_token" in request.query:
        # Secrets never travel in URLs (they end up in logs and browser history).
        raise json_error(400, "tokens go in the Authorization header, never in the URL")
    is_public = (getattr(target, "public", False) or request.match_info.http_exception is not None
                 or (request.method in SAFE_METHODS and request.path.startswith(tuple(PUBLIC_PATH_PREFIXES))))
    p = None if is_public else await _authenticate(request)
    if p is None and not is_public:
        raise json_error(401, "authentication required", headers={"WWW-Authenticate": 'Bearer realm="callrec"'})
    if p is not None:
        request[PRINCIPAL] = p
    return await handler(request)


def settings_of(request: web.Request) -> Any:
    return request.app[SETTINGS]
