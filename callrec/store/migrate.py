"""Numbered SQL migrations (``migrations/NNN_name.sql``), applied once each, in order.

Safe to run twice at once: the whole run holds a transaction-level advisory lock, so a second
``callrec migrate`` waits and then finds nothing to do.  An applied migration whose file changed
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
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
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
            await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                mig.version, mig.name, mig.checksum,
            )
            applied_now.append(f"{mig.version:03d}_{mig.name}")
    return applied_now


async def pending(conn: Conn) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [f"{m.version:03d}_{m.name}" for m in available_migrations() if m.version not in done]
