"""``callrec serve --api-only``: the HTTP API and console without Asterisk.

No ARI, AMI or FastAGI, no call log writer, no follow-up of open calls: those belong to the nodes that run
beside an Asterisk.  Several of these can stand behind a load balancer: sessions, the log-in throttle and
the per-user export limit live in PostgreSQL.  Readiness (``/ready`` on ``[metrics] listen``) needs only the
database.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg

from callrec import __version__, systemd
from callrec.app import FatalError, _brief
from callrec.config.node import node_name
from callrec.config.settings import Settings
from callrec.metrics import Metrics, MetricsServer
from callrec.store import connect_pool
from callrec.store.migrate import migrate, pending
from callrec.store.nodes import heartbeat
from callrec.store.users import sync_confidential_rules
from callrec.web.server import HttpServer

log = logging.getLogger("callrec")


def api_node_name(settings: Settings) -> str:
    """The name in the `nodes` table: `[node] name` when set, else `<host>-api` (an API-only process on a PBX
    host keeps the PBX daemon's row apart)."""
    return settings.node.name or f"{node_name(settings.node)}-api"[:63]


class ApiOnly:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = api_node_name(settings)
        self.pool: asyncpg.Pool | None = None
        self.http: HttpServer | None = None
        self.metrics = Metrics(__version__)
        self.metrics_server: MetricsServer | None = None
        self.database_up = False
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, run_migrations: bool = False) -> None:
        s = self.settings
        if not s.http.active:
            raise FatalError("http.enabled: `serve --api-only` serves the HTTP API; set http.enabled = true and "
                             "http.listen")
        try:
            self.pool = await connect_pool(s.database.dsn, 1, 2)
            async with self.pool.acquire() as conn:
                if run_migrations:
                    await migrate(conn)
                missing = await pending(conn)
                if missing:
                    raise FatalError(f"database: schema not up to date ({', '.join(missing)} pending); "
                                     "run `callrec migrate`")
                await sync_confidential_rules(conn, [r.name for r in s.policy.rules if r.confidential])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise FatalError(f"database.dsn: cannot connect to PostgreSQL: {_brief(exc)}") from None
        self.database_up = True
        self.http = HttpServer(s, on_request=self.metrics.observe_request)
        try:
            await self.http.start()
        except OSError as exc:
            self.http = None
            raise FatalError(str(exc)) from None
        self._tasks.append(asyncio.create_task(
            heartbeat(self.pool, self.node, "api", __version__, s.node.heartbeat_interval, self._beat),
            name="node-heartbeat"))
        if s.metrics.listen:
            self.metrics_server = MetricsServer(s.metrics.host_port(), self.metrics, self.ready)
            try:
                await self.metrics_server.start()
            except OSError as exc:
                self.metrics_server = None
                raise FatalError(str(exc)) from None
        systemd.notify("READY=1", "STATUS=serving the HTTP API (no Asterisk)")
        interval = systemd.watchdog_interval()
        if interval is not None:
            self._tasks.append(asyncio.create_task(systemd.watchdog(interval), name="systemd-watchdog"))
        log.info("callrec started as API-only node %s: no ARI, AMI or FastAGI", self.node)

    def _beat(self, ok: bool) -> None:
        self.database_up = ok

    def ready(self) -> dict[str, bool]:
        """What /ready reports: only the database (no Asterisk here)."""
        return {"database": self.database_up}

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), 0.25)
            except TimeoutError:
                pass
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise FatalError(f"internal task {task.get_name()} died: {task.exception()}")

    async def stop(self) -> None:
        systemd.notify("STOPPING=1")
        if self.http is not None:
            await self.http.stop()
            self.http = None
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
