"""Typed keys for what the app carries."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from callrec.access import Principal
from callrec.config.settings import Settings
from callrec.recording.control import RecordingControl

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
PRINCIPAL = web.RequestKey("principal", Principal)
# Pause/resume needs the daemon's AMI connection: absent when the app runs without the daemon.
RECORDING_CONTROL = web.AppKey("recording_control", RecordingControl)
