"""Running the app inside the daemon: bind, serve, stop."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web

from ..config import Settings
from .app import AccessLogger, make_app

log = logging.getLogger("callrec.http")


class HttpServer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.app = make_app(settings, pool)
        self.runner = web.AppRunner(self.app, access_log_class=AccessLogger, access_log=log,
                                    handle_signals=False)
        self.port: int | None = None

    async def start(self) -> None:
        host, port = self.settings.http.host_port()
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, shutdown_timeout=5.0, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise OSError(f"http.listen: cannot listen on {self.settings.http.listen}: {exc.strerror or exc}") from None
        addresses = self.runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("ops API listening on http://%s:%d/api/v1/", host, self.port)

    async def stop(self) -> None:
        await self.runner.cleanup()
