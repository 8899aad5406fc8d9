"""Typed keys for what the app carries."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from callrec.access import Principal
from callrec.config.settings import Settings
from callrec.recording.control import RecordingControl
from callrec.storage import Storage

POOL = web.AppKey("pool", asyncpg.Pool)
# Searches, counts and exports read through this one: a read replica (``database.read_dsn``), else POOL.
READ_POOL = web.AppKey("read_pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
# Every read and delete of audio goes through it (local folder or bucket, encrypted or not).
STORAGE = web.AppKey("storage", Storage)
PRINCIPAL = web.RequestKey("principal", Principal)
# The client's address as the routes see it (behind a trusted proxy: the forwarded one), noted once
# per request so the access log needs no app (aiohttp logs requests it could not parse without one).
CLIENT_ADDRESS = web.RequestKey("client_address", str)
# Pause/resume needs the daemon's AMI connection: absent when the app runs without the daemon.
RECORDING_CONTROL = web.AppKey("recording_control", RecordingControl)
