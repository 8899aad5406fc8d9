"""asyncpg pool and the read queries ops use."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from callrec.store.record import COLUMNS, CallRecord

# A connection: a plain one (the CLI, tests) or one borrowed from the daemon's pool.
Conn = asyncpg.Connection | PoolConnectionProxy
# What runs one query: a connection, or the pool (which borrows one for the query).
Db = Conn | asyncpg.Pool


async def connect_pool(dsn: str, min_size: int = 1, max_size: int = 5, timeout: float = 10.0,
                       server_settings: dict[str, str] | None = None) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=timeout,
                                     command_timeout=30,
                                     server_settings={"application_name": "callrec", **(server_settings or {})})


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
