"""Running the app inside the daemon: bind, serve, stop."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web

from callrec.config.settings import Settings, is_loopback
from callrec.recording.control import RecordingControl
from callrec.store.db import connect_pool
from callrec.web import logsafe
from callrec.web.app import AccessLogger, RequestObserver, make_app

log = logging.getLogger("callrec.http")


def api_pool_settings(settings: Settings) -> dict[str, str]:
    """PostgreSQL settings of the API's own connections: a transaction left idle (a client that
    stalled an export, a handler stuck) is ended by the server after ``http.write_timeout`` + 10 s."""
    idle_ms = int((settings.http.write_timeout + 10) * 1000)
    # Custom plans always: asyncpg prepares every statement, and after five runs PostgreSQL may switch to a
    # generic plan that cannot see the values.  For an exact number that was a walk back through the whole log
    # (0.7 s at a million calls) where the digits' index answers in a millisecond; planning costs ~1 ms.
    return {"application_name": "callrec-api", "idle_in_transaction_session_timeout": str(idle_ms),
            "plan_cache_mode": "force_custom_plan",
            # No parallel workers: the API's queries read pages of 50; starting workers cost more than they
            # saved (on a busy 2-core machine 180 ms of a 206 ms tag search).
            "max_parallel_workers_per_gather": "0"}


class HttpServer:
    """``pool``: None opens a pool of its own, so API requests (long exports) never take the
    connections the call-log writer needs."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool | None = None,
                 recording_control: RecordingControl | None = None,
                 on_request: RequestObserver | None = None) -> None:
        self.settings = settings
        self.on_request = on_request
        self.recording_control = recording_control
        self.pool = pool
        self._own_pool = pool is None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        host, port = self.settings.http.host_port()
        if self.pool is None:
            self.pool = await connect_pool(self.settings.database.dsn, 1, 4,
                                           server_settings=api_pool_settings(self.settings))
        app = make_app(self.settings, self.pool, self.recording_control, self.on_request)
        logsafe.install()  # before the first request: aiohttp's parse errors quote request bytes
        self.runner = web.AppRunner(app, access_log_class=AccessLogger, access_log=log, handle_signals=False,
                                    shutdown_timeout=5.0,
                                    # The header read timeout: aiohttp closes a connection whose next
                                    # request's headers are not complete this long after the connection
                                    # opened or the previous response (however slowly bytes trickle in).
                                    keepalive_timeout=self.settings.http.read_timeout,
                                    # A body left unread (a 408, a refused request) is not drained: close.
                                    lingering_time=0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise OSError(f"http.listen: cannot listen on {self.settings.http.listen}: {exc.strerror or exc}") from None
        addresses = self.runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("ops API listening on http://%s:%d/api/v1/", host, self.port)
        if not is_loopback(host) and not self.settings.http.cookie_secure:
            log.warning("http.listen %s is not a loopback address and the API speaks plain HTTP (passwords, "
                        "session cookies, tokens, recordings): put TLS in front (a reverse proxy on this host)",
                        self.settings.http.listen)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self._own_pool and self.pool is not None:
            await self.pool.close()
            self.pool = None
