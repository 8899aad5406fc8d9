"""Several nodes on one call log: each daemon's heartbeat, the list ops read, and closing out a node gone
for good (``callrec nodes list|retire``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from callrec.store import audit
from callrec.store.db import Db

log = logging.getLogger("callrec")

# What a retired node's open rows say: the node is gone, so nothing more is known about them.
RETIRE_NOTE = "closed as lost: node {node} was retired by {actor} (`callrec nodes retire`); the rest is unknown"


async def beat(db: Db, name: str, kind: str, version: str, *, starting: bool = False) -> None:
    """This node's `last seen` (and, when it starts, its start time; a retired node that starts is back)."""
    if starting:
        await db.execute(
            "INSERT INTO nodes (name, kind, version) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET "
            "kind = EXCLUDED.kind, version = EXCLUDED.version, started_at = now(), last_seen = now(), "
            "retired_at = NULL", name, kind, version)
    else:
        await db.execute(
            "INSERT INTO nodes (name, kind, version) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET "
            "last_seen = now()", name, kind, version)


async def heartbeat(pool: asyncpg.Pool, name: str, kind: str, version: str, interval: float,
                    on_beat: Callable[[bool], None] | None = None) -> None:
    """Write `last seen` every ``interval`` seconds for as long as the daemon runs (a task of its own: one
    small UPSERT, never on a call's path).  A database that is away is tried again at the next beat.
    ``on_beat(ok)`` after each try (the API-only process's readiness)."""
    starting = True
    down = False
    while True:
        try:
            if starting:
                await warn_if_in_use(pool, name, interval)
            await beat(pool, name, kind, version, starting=starting)
            starting = False
            if down:
                log.info("node %s: heartbeat written again", name)
            down = False
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not down:
                log.warning("node %s: heartbeat not written (%s); trying again every %.0f s", name,
                            type(exc).__name__, interval)
            down = True
        if on_beat is not None:
            on_beat(not down)
        await asyncio.sleep(interval)  # the period itself, not a wait for an event


async def warn_if_in_use(db: Db, name: str, interval: float) -> bool:
    """A heartbeat under this name came within two intervals: another process may be running with the same
    name (or this one restarted at once after a crash).  Said once, as a WARNING; True when said."""
    ago = await db.fetchval("SELECT extract(epoch FROM now() - last_seen)::float8 FROM nodes "
                            "WHERE name = $1 AND retired_at IS NULL", name)
    if ago is None or ago > 2 * interval:
        return False
    log.warning("node %s: a heartbeat under this name was written %.0f s ago; if another callrec runs with this "
                "[node] name, give each its own (each node follows up its own open calls at start)", name, ago)
    return True


@dataclass(frozen=True)
class NodeRow:
    name: str
    kind: str
    version: str
    started_at: datetime | None
    last_seen: datetime | None
    seen_s_ago: float | None  # by the database's clock
    retired_at: datetime | None
    open_calls: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version,
                "started_at": _iso(self.started_at), "last_seen": _iso(self.last_seen),
                "seen_s_ago": self.seen_s_ago, "retired_at": _iso(self.retired_at), "open_calls": self.open_calls}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def list_nodes(db: Db) -> list[NodeRow]:
    """Every node that wrote a heartbeat, and every node named on an open call (a node seen only in the call
    log, e.g. one that ran before migration 016's heartbeat, still shows with its open calls)."""
    rows = await db.fetch(
        """WITH open AS (SELECT node, count(*) AS n FROM calls WHERE finalized_at IS NULL AND node IS NOT NULL
                         GROUP BY node)
           SELECT coalesce(n.name, o.node) AS name, coalesce(n.kind, 'pbx') AS kind, coalesce(n.version, '') AS version,
                  n.started_at, n.last_seen, extract(epoch FROM now() - n.last_seen)::float8 AS seen_s_ago,
                  n.retired_at, coalesce(o.n, 0)::int AS open_calls
             FROM nodes n FULL JOIN open o ON o.node = n.name
            ORDER BY 1""")
    return [NodeRow(**dict(r)) for r in rows]


class RetireRefused(Exception):
    """The node was seen too recently (or is unknown): one line for the admin."""


async def retire(conn: asyncpg.Connection, node: str, *, actor: str, min_idle_s: float, force: bool,
                 remote: str | None = None) -> list[str]:
    """Close out a node gone for good: its open rows finalized as lost (consent unknown stays
    `unavailable`, a recording that was going on is `unclosed`: the file is on the gone node), the node
    marked retired, one audit entry.  Returns the ids of the calls closed.  Refuses a node seen within
    ``min_idle_s`` seconds unless ``force``."""
    async with conn.transaction():
        # One retire at a time per node; a node row that is being beaten waits for us, not the other way.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 16))", f"callrec-node:{node}")
        row = await conn.fetchrow("SELECT last_seen, extract(epoch FROM now() - last_seen)::float8 AS ago "
                                  "FROM nodes WHERE name = $1", node)
        open_n = await conn.fetchval("SELECT count(*) FROM calls WHERE finalized_at IS NULL AND node = $1", node)
        if row is None and not open_n:
            raise RetireRefused(f"no node {node!r}: not in the nodes table and no open call names it "
                                "(see `callrec nodes list`)")
        if row is not None and row["ago"] < min_idle_s and not force:
            raise RetireRefused(
                f"node {node!r} was seen {row['ago']:.0f} s ago (less than {min_idle_s / 60:g} min): it may still "
                "be running; stop it first, wait, or use --force")
        note = RETIRE_NOTE.format(node=node, actor=actor)
        closed = await conn.fetch(
            """UPDATE calls SET state = 'ended', warnings = warnings || $2::text,
                      consent = coalesce(consent, 'unavailable'), consent_at = coalesce(consent_at, now()),
                      recording_status = CASE WHEN recording_status IN ('starting', 'recording', 'finalizing')
                                              THEN 'unclosed' ELSE recording_status END,
                      recording_error = CASE WHEN recording_status IN ('starting', 'recording', 'finalizing')
                                             THEN 'not finalized: its node was retired' ELSE recording_error END,
                      finalized_at = now(), updated_at = now()
                WHERE finalized_at IS NULL AND node = $1
            RETURNING id""", node, note)
        ids = [str(r["id"]) for r in closed]
        await conn.execute("INSERT INTO nodes (name, last_seen) VALUES ($1, coalesce($2, now())) "
                           "ON CONFLICT (name) DO UPDATE SET retired_at = now()",
                           node, row["last_seen"] if row is not None else None)
        await conn.execute("UPDATE nodes SET retired_at = now() WHERE name = $1", node)
        await audit.append(conn, actor=actor, role="admin", action="node_retire",
                           details={"node": node, "calls_closed": len(ids), "call_ids": ids[:100], "forced": force,
                                    "last_seen": row["last_seen"] if row is not None else None},
                           remote=remote)
    return ids
