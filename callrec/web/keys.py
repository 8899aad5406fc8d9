"""Typed keys for what the app carries."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..config import Settings

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
