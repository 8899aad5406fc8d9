"""The aiohttp application: middlewares (errors as JSON, auth, security headers) and the routes.

Route modules each have ``setup(app)``; add a new one to ROUTE_MODULES (one line) and describe
its operations in the OpenAPI registry (``openapi.operation``): a test checks every route is
described.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from types import ModuleType

import asyncpg
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from callrec.config.settings import Settings
from callrec.recording.control import RecordingControl
from callrec.storage import Storage
from callrec.store import audit
from callrec.web import (
    console,
    logsafe,
    routes_alerts,
    routes_audit,
    routes_auth,
    routes_calls,
    routes_console,
    routes_dataops,
    routes_meta,
    routes_player,
    routes_recording,
    routes_transcripts,
)
from callrec.web.auth import auth_middleware
from callrec.web.common import audit_window_sweeper
from callrec.web.errors import HiddenCall, json_error
from callrec.web.keys import CLIENT_ADDRESS, POOL, PRINCIPAL, READ_POOL, RECORDING_CONTROL, SETTINGS, STORAGE

# What the daemon's metrics learn of each request: route template, method, status, seconds.
RequestObserver = Callable[[str, str, int, float], None]
REQUEST_OBSERVER: web.AppKey[RequestObserver] = web.AppKey("request_observer")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("callrec.http")

ROUTE_MODULES: list[ModuleType] = [routes_meta, routes_auth, routes_calls, routes_audit, routes_dataops,
                                   routes_recording, routes_transcripts, routes_alerts, routes_console, routes_player,
                                   console]
MAX_BODY = 64 * 1024

@web.middleware
async def error_middleware(request: web.Request, handler: routes_meta.Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        await _audit_denial(request, exc)
        if exc.content_type != "application/json" and exc.status >= 400:
            # aiohttp's own errors (unknown route, wrong method, body too large) as JSON too.
            message = exc.reason or "error"
            if exc.status == 413:
                message = f"request body larger than {MAX_BODY} bytes"
            exc.text = json.dumps({"error": message})
            exc.content_type = "application/json"
        _security_headers(exc)
        raise
    except (asyncpg.DataError, asyncpg.CheckViolationError, ValueError, UnicodeError, OverflowError) as exc:
        # A value the database or a parser refused: the client's input, not our fault.
        log.info("%s %s: bad input: %s", request.method, request.path, type(exc).__name__)
        raise json_error(400, "invalid input") from None
    except ConnectionResetError:
        raise  # the client went away mid-response (a player seeking, an export cancelled)
    except Exception:
        # Logged without the request's headers or body (credentials); the client gets no details.
        log.exception("%s %s failed", request.method, request.path)
        raise json_error(500, "internal error") from None
    _security_headers(response)
    return response

async def _audit_denial(request: web.Request, exc: web.HTTPException) -> None:
    """A 403 to a known principal, or a 404 for a call hidden from it, is counted on the audit
    trail (aggregated per principal, kind, route and window: a prober cannot flood it).  Unknown
    calls are not denials, and a failure to write never changes the answer."""
    p = request.get(PRINCIPAL)
    if p is None:
        return  # unauthenticated (401) or refused before authentication (CSRF): nobody to name
    if exc.status == 403:
        kind, call_id = "forbidden", None
    elif isinstance(exc, HiddenCall):
        kind, call_id = "hidden_call", exc.call_id
    else:
        return
    route = request.match_info.route.resource
    target = f"{request.method} {route.canonical if route is not None else request.path}"
    try:
        await audit.note_denial(request.app[POOL], window_s=request.app[SETTINGS].http.denied_audit_window,
                                actor=p.name, role=p.role, kind=kind, target=target, call_id=call_id,
                                remote=request.get(CLIENT_ADDRESS))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        log.warning("%s %s: denial not audited: %s", request.method, request.path, type(err).__name__)


@web.middleware
async def _metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        # The route's template (/api/v1/calls/{id}), never the path: no ids or numbers in metric labels.
        resource = request.match_info.route.resource
        request.app[REQUEST_OBSERVER](resource.canonical if resource is not None else "unmatched", request.method,
                                      status, time.monotonic() - started)


def _security_headers(response: web.StreamResponse) -> None:
    if response.prepared:
        return
    _set_security_headers(response)


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Streamed responses (audio, exports, the evidence zip) are prepared inside their handler,
    before the middleware sees them: they get the same headers here, just before headers go out."""
    _set_security_headers(response)


def _set_security_headers(response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Cache-Control", "no-store")
    h.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'")

class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: phone numbers, and no secrets in logs; anything in it
    shaped like a credential redacted, at most 300 characters), status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        p = request.get(PRINCIPAL) if hasattr(request, "get") else None
        who = p.name if p is not None else "-"
        # A request aiohttp could not parse never reached the middlewares: its peer is all there is.
        client = request.get(CLIENT_ADDRESS) or request.remote
        self.logger.info("%s %s %s %d %.3fs %s", client, request.method, logsafe.redact(request.path)[:300],
                         response.status, time, who)

def make_app(settings: Settings, pool: asyncpg.Pool, recording_control: RecordingControl | None = None,
             on_request: RequestObserver | None = None, read_pool: asyncpg.Pool | None = None,
             storage: Storage | None = None) -> web.Application:
    middlewares = [error_middleware, auth_middleware]
    if on_request is not None:
        middlewares.insert(0, _metrics_middleware)  # outermost: it sees the response the client gets
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[POOL] = pool
    app[READ_POOL] = read_pool if read_pool is not None else pool
    app[STORAGE] = storage if storage is not None else Storage.of(settings)
    app.on_response_prepare.append(_on_response_prepare)
    if recording_control is not None:
        app[RECORDING_CONTROL] = recording_control
    if on_request is not None:
        app[REQUEST_OBSERVER] = on_request
    for module in ROUTE_MODULES:
        module.setup(app)
    app.cleanup_ctx.append(audit_window_sweeper("denial audit", audit.close_denial_windows,
                                                lambda a: a[SETTINGS].http.denied_audit_window))
    return app
