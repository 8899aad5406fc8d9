"""Typed keys for what the app carries."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..access import Principal
from ..config import Settings

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
PRINCIPAL = web.RequestKey("principal", Principal)
