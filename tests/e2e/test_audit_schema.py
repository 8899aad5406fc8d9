"""Migration 005: the audit trail is append-only at the database level; the access tables hold."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from support import REPO

from callrec.access import cli_principal
from callrec.store import audit


async def test_audit_log_refuses_update_delete_truncate(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        call_id = str(uuid.uuid4())
        entry = await audit.append(conn, actor="alice", role="supervisor", action="listen", call_id=call_id,
                                   details={"range": "0-"}, remote="127.0.0.1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only: UPDATE"):
            await conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = $1", entry)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only: DELETE"):
            await conn.execute("DELETE FROM audit_log WHERE id = $1", entry)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only: TRUNCATE"):
            await conn.execute("TRUNCATE audit_log")
        rows = await audit.search(conn, cli_principal(), call_id=call_id)
        assert [(r["id"], r["actor"], r["action"], r["details"]) for r in rows] == [
            (entry, "alice", "listen", {"range": "0-"})]
    finally:
        await conn.close()


async def test_access_tables_constraints(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        with pytest.raises(asyncpg.CheckViolationError):  # an agent needs an extension
            await conn.execute("INSERT INTO users (name, role) VALUES ('a1', 'agent')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO users (name, role) VALUES ('x', 'root')")
        with pytest.raises(asyncpg.CheckViolationError):  # tokens are stored as sha256 hex only
            await conn.execute("INSERT INTO api_tokens (name, token_sha256, role) VALUES ('t', 'crt_secret', 'admin')")
        cols = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'calls'")}
        assert {"confidential", "confidential_at", "confidential_by", "audio_deleted_at",
                "audio_deleted_by"} <= cols
    finally:
        await conn.close()


async def test_documented_app_role_cannot_rewrite_the_trail(database: str) -> None:
    """docs/sql/app_role.sql: the daemon's role can write calls and append audit entries, and can
    neither alter audit rows nor switch the triggers off."""
    from urllib.parse import urlsplit, urlunsplit

    role = f"callrec_app_{uuid.uuid4().hex[:8]}"
    sql = (REPO / "docs/sql/app_role.sql").read_text()
    statements = [line.replace(':"app"', f'"{role}"') for line in sql.splitlines()
                  if line.strip() and not line.startswith("--")]
    owner = await asyncpg.connect(database)
    try:
        await owner.execute(f'CREATE ROLE "{role}" LOGIN')
        for statement in statements:
            await owner.execute(statement)
        parts = urlsplit(database)
        app_dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        app = await asyncpg.connect(app_dsn)
        try:
            entry = await audit.append(app, actor="svc", action="view", call_id=str(uuid.uuid4()))
            assert await app.fetchval("SELECT actor FROM audit_log WHERE id = $1", entry) == "svc"
            for attempt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
                            "UPDATE api_tokens SET role = 'admin'", "INSERT INTO users (name, role) "
                            "VALUES ('evil', 'admin')"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(attempt)
        finally:
            await app.close()
        assert await owner.fetchval("SELECT count(*) FROM audit_log") == 1
    finally:
        await owner.execute(f'DROP OWNED BY "{role}"')
        await owner.execute(f'DROP ROLE "{role}"')
        await owner.close()
