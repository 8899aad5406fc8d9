"""Numbered SQL migrations (``migrations/NNN_name.sql``), applied once each, in order.

Safe to run twice at once: the whole run holds an advisory lock, so a second ``callrec migrate``
waits and then finds nothing to do.  Each migration runs in a transaction of its own, except one
whose first line is ``-- callrec: no transaction``: its statements (separated by ``;`` at a line's
end) run one by one outside a transaction, as ``CREATE INDEX CONCURRENTLY`` must, so an index on a
live ``calls`` table is built without blocking the calls being logged.  Such a file must be safe to
run again after an interruption (``DROP INDEX CONCURRENTLY IF EXISTS`` before its ``CREATE``: a
build that was cut short leaves an invalid index behind).  An applied migration whose file changed
afterwards is an error (migrations are append-only).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from callrec.store.db import Conn

_LOCK_KEY = 0x63616C6C72656301  # "callrec\x01"
_NAME_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def outside_transaction(self) -> bool:
        return self.sql.startswith(NO_TRANSACTION)

    def statements(self) -> list[str]:
        return [s.strip() for s in _STATEMENT_END.split(self.sql) if _has_code(s)]


NO_TRANSACTION = "-- callrec: no transaction\n"
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)


def _has_code(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())


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
            if mig.outside_transaction:
                for statement in mig.statements():
                    await conn.execute(statement)
                await _record(conn, mig)
            else:
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await _record(conn, mig)
            applied_now.append(f"{mig.version:03d}_{mig.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def _record(conn: Conn, mig: Migration) -> None:
    await conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                       mig.version, mig.name, mig.checksum)


async def pending(conn: Conn) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [f"{m.version:03d}_{m.name}" for m in available_migrations() if m.version not in done]
