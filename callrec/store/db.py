"""asyncpg pool and the read queries ops use.

Failover: ``database.dsn`` may name several hosts (``postgresql://h1:5432,h2:5432/callrec?
target_session_attrs=read-write``); asyncpg then tries them in order and keeps the first that takes
writes.  A pool does not look again by itself, so each pool made here watches its connections
(``ServerWatch``): an error that says the server is gone or now refuses writes (a standby, a fenced
old primary) expires every connection of that DSN's pools, and the next use connects afresh, to
whichever host is the primary now.  The first connection to land on another server than before logs
the switch, once per process.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from callrec.store.record import COLUMNS, CallRecord

# A connection: a plain one (the CLI, tests) or one borrowed from the daemon's pool.
Conn = asyncpg.Connection | PoolConnectionProxy
# What runs one query: a connection, or the pool (which borrows one for the query).
Db = Conn | asyncpg.Pool


log = logging.getLogger("callrec.database")

# SQLSTATEs after which a connection is no use for writing any more: the server refuses writes
# (25006: a standby, or a primary fenced with default_transaction_read_only), is shutting down or
# recovering (57P01-57P03), or the connection is gone (08: connection exceptions).
_STALE_STATES = ("25006", "57P01", "57P02", "57P03")


def is_stale(exc: BaseException | None) -> bool:
    """The error says this connection (and likely its pool's others) points at the wrong server."""
    if exc is None:
        return False
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError | ConnectionError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state in _STALE_STATES or state.startswith("08")


def server_of(conn: asyncpg.Connection) -> str:
    """``host:port`` (or the socket path) a connection reached: asyncpg's record of its address."""
    addr = getattr(conn, "_addr", None)
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


class ServerWatch:
    """The server one DSN's connections reach, shared by every pool of that DSN in this process."""

    def __init__(self, dsn: str, what: str) -> None:
        self.dsn = dsn
        self.what = what  # "primary", "read replica": in the switch line
        self.server: str | None = None  # where the latest new connection landed
        self.switches = 0
        self.expired = 0  # times the pools' connections were dropped for a stale one
        self._tasks: set[asyncio.Task[None]] = set()
        self.pools: list[asyncpg.Pool] = []  # asyncpg pools take no weak references; closed ones are dropped

    async def connected(self, conn: asyncpg.Connection) -> None:
        server = server_of(conn)
        if self.server is not None and server != self.server:
            self.switches += 1
            # The one line of a failover (the call-log writer adds when its backlog is written).
            log.warning("database: now on %s, was %s (the %s changed); every connection to the old "
                        "server is dropped and re-made here", server, self.server, self.what)
            await self.expire()
        self.server = server

    def query_done(self, record: Any) -> None:
        """asyncpg's query logger (plain, so a query costs no task): a stale connection expires the
        pools, not one failed query after another."""
        if is_stale(record.exception):
            log.debug("database: %s: %s; connections expired", record.conn_addr, type(record.exception).__name__)
            task = asyncio.get_running_loop().create_task(self.expire())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def expire(self) -> None:
        # asyncpg closes an expired connection when it is released, and re-connects an idle one
        # when it is next acquired: nothing in use is cut.
        self.expired += 1
        self.pools = [p for p in self.pools if not p.is_closing()]
        for pool in self.pools:
            await pool.expire_connections()


class NoPrimary(ConnectionError):
    """No host of a multi-host DSN takes writes (yet): a failover under way.  A ConnectionError, so
    everything that waits out an unreachable database waits this out the same way."""


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(*args, **kwargs)
    except asyncpg.exceptions.TargetServerAttributeNotMatched as exc:
        raise NoPrimary(f"no host takes writes yet ({exc})") from None


_WATCHES: dict[str, ServerWatch] = {}


def watch_of(dsn: str, what: str = "primary") -> ServerWatch:
    # Forget closed pools, and the DSNs left with none (a test process opens hundreds).
    for key, watch in list(_WATCHES.items()):
        watch.pools = [p for p in watch.pools if not p.is_closing()]
        if not watch.pools and key != dsn:
            del _WATCHES[key]
    if dsn not in _WATCHES:
        _WATCHES[dsn] = ServerWatch(dsn, what)
    return _WATCHES[dsn]


async def connect_pool(dsn: str, min_size: int = 1, max_size: int = 5, timeout: float = 10.0,
                       server_settings: dict[str, str] | None = None, what: str = "primary") -> asyncpg.Pool:
    watch = watch_of(dsn, what)

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(watch.query_done)
        await watch.connected(conn)

    pool = asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=timeout,
                               command_timeout=30, init=init, connect=_connect,
                               server_settings={"application_name": "callrec", **(server_settings or {})})
    watch.pools.append(pool)  # before the first connections: a switch while they open expires them too
    return await pool


async def fetch_calls(conn: Db, *, limit: int = 50,
                      before: datetime | None = None, number: str | None = None) -> list[dict[str, Any]]:
    """Most recent calls first.  ``number`` matches caller or called number; ``*`` is a wildcard."""
    where = []
    args: list[Any] = []
    if before is not None:
        args.append(before)
        where.append(f"started_at < ${len(args)}")
    if number:
        pattern = number.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
        args.append(pattern)
        where.append(f"(caller_number LIKE ${len(args)} OR called_number LIKE ${len(args)})")
    args.append(limit)
    sql = "SELECT * FROM calls"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY started_at DESC, id DESC LIMIT ${len(args)}"
    rows = await conn.fetch(sql, *args)
    return [dict(r) for r in rows]


async def adopt_open_calls(conn: Db, node: str) -> int:
    """Open rows written before calls had a node (migration 016) become this node's: the first node to
    start after the upgrade follows them up, once."""
    status = await conn.execute("UPDATE calls SET node = $1 WHERE finalized_at IS NULL AND node IS NULL", node)
    return int(status.split()[-1])


async def fetch_open_calls(conn: Db, door: str = "ari", node: str | None = None) -> list[CallRecord]:
    """Calls an earlier run did not finalize (it was stopped or crashed while they went on); with ``node``,
    only that node's (another node's open calls are its own business, however they look from here)."""
    rows = await conn.fetch(
        "SELECT * FROM calls WHERE finalized_at IS NULL AND door = $1 AND ($2::text IS NULL OR node = $2) "
        "ORDER BY started_at", door, node)
    out = []
    for r in rows:
        fields = {name: r[name] for name in COLUMNS}
        fields["id"] = str(fields["id"])
        fields["warnings"] = list(fields["warnings"] or [])
        out.append(CallRecord(**fields))
    return out


def record_from_row(r: asyncpg.Record) -> CallRecord:
    """A ``calls`` row as a CallRecord (the fields callrec knows)."""
    fields = {name: r[name] for name in COLUMNS}
    fields["id"] = str(fields["id"])
    fields["warnings"] = list(fields["warnings"] or [])
    return CallRecord(**fields)
