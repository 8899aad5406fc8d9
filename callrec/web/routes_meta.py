"""Public routes: /healthz and /api/v1/openapi.json."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from callrec.web import openapi
from callrec.web.auth import public
from callrec.web.keys import POOL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@public
async def healthz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(3):
            await request.app[POOL].fetchval("SELECT 1")
        db_ok = True
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        db_ok = False
    return web.json_response({"status": "ok" if db_ok else "degraded", "database": db_ok},
                             status=200 if db_ok else 503)


@public
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/api/v1/openapi.json", openapi_json, allow_head=False)


openapi.operation("get", "/healthz", summary="Liveness and database reachability", public=True, tags=["meta"],
                  responses={"200": openapi.json_response("up", {"type": "object"}),
                             "503": openapi.json_response("database unreachable", {"type": "object"})})
openapi.operation("get", "/api/v1/openapi.json", summary="This OpenAPI description", public=True, tags=["meta"],
                  responses={"200": openapi.json_response("the description", {"type": "object"})})
