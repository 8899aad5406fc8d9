"""Typed keys for what the app carries."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..access import Principal
from ..config import Settings
from ..recording_control import RecordingControl

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
PRINCIPAL = web.RequestKey("principal", Principal)
# Pause/resume needs the daemon's AMI connection: absent when the app runs without the daemon.
RECORDING_CONTROL = web.AppKey("recording_control", RecordingControl)
