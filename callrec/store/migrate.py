"""Numbered SQL migrations (``migrations/NNN_name.sql``), applied once each, in order.

Safe to run twice at once: the whole run holds a session-level advisory lock, so a second
``callrec migrate`` waits and then finds nothing to do.  An applied migration whose file changed
afterwards is an error (migrations are append-only).

Each migration runs in a transaction of its own, except one whose first line is ``-- callrec: no
transaction``: its statements run one by one outside a transaction, so that indexes on a live ``calls``
table build ``CONCURRENTLY`` (no lock on writes) and a backfill commits in batches.  Such a file must be
re-runnable from its start (``IF NOT EXISTS``, ``OR REPLACE``): when it is interrupted, it is not recorded
as applied and runs again; an index a failed concurrent build left invalid is dropped before it is rebuilt.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from callrec.store.db import Conn

_LOCK_KEY = 0x63616C6C72656301  # "callrec\x01"
_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
NO_TRANSACTION = "-- callrec: no transaction"
_CONCURRENT_INDEX_RE = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+([a-z0-9_]+)\s", re.I)


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def transactional(self) -> bool:
        return not self.sql.startswith(NO_TRANSACTION)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("callrec.store").joinpath("migrations").iterdir():
        m = _NAME_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return found


async def migrate(conn: Conn) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        done = {r["version"]: r for r in rows}
        for mig in available_migrations():
            if mig.version in done:
                if done[mig.version]["checksum"] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.version:03d}_{mig.name} changed after it was applied; "
                        "add a new migration instead of editing an old one"
                    )
                continue
            if mig.transactional:
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await _record(conn, mig)
            else:
                for statement in split_statements(mig.sql):
                    await _run_outside_transaction(conn, statement)
                await _record(conn, mig)
            applied_now.append(f"{mig.version:03d}_{mig.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def _record(conn: Conn, mig: Migration) -> None:
    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                       mig.version, mig.name, mig.checksum)


async def _run_outside_transaction(conn: Conn, statement: str) -> None:
    m = _CONCURRENT_INDEX_RE.match(statement)
    if m:
        # A concurrent build that failed (or was cancelled) leaves an invalid index of this name, which
        # IF NOT EXISTS would keep: drop it and build again.
        invalid = await conn.fetchval(
            "SELECT i.indisvalid = false FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace", m.group(1).lower())
        if invalid:
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {m.group(1)}")
    await conn.execute(statement)


def split_statements(sql: str) -> list[str]:
    """The statements of a SQL file, split at each ``;`` outside quotes, dollar quotes and comments."""
    out: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch == "'":
            end = sql.find("'", i + 1)
            while end >= 0 and sql.startswith("''", end):
                end = sql.find("'", end + 2)
            i = n if end < 0 else end + 1
        elif ch == "$" and (m := _DOLLAR_RE.match(sql, i)):
            end = sql.find(m.group(0), m.end())
            i = n if end < 0 else end + len(m.group(0))
        elif ch == ";":
            out.append(sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    out.append(sql[start:])
    return [s.strip() for s in out if _has_code(s)]


_DOLLAR_RE = re.compile(r"\$[A-Za-z_]*\$")


def _has_code(statement: str) -> bool:
    lines = [ln for ln in statement.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    return bool(lines)


async def pending(conn: Conn) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [f"{m.version:03d}_{m.name}" for m in available_migrations() if m.version not in done]
