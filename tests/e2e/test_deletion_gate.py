"""The deletion gate (dataops/deletion.py) is the one way audio is deleted or a call anonymized:
the API, the CLI, subject erasure and retention's batches all refuse a held call through it, each
refusal audited, and none of them ever deletes a file outside the call's own path.  Real
PostgreSQL, real files, the real HTTP server and CLI."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.dataops_helpers import add_call, audit_rows, run_cli, write_config
from support.opsapi import PASSWORD, api_settings

from callrec.access import cli_principal
from callrec.dataops.deletion import GATE_COLUMNS, anonymize_locked, delete_locked_audio, set_legal_hold
from callrec.dataops.subjects import erase_subject
from callrec.store import users
from callrec.web.server import HttpServer

HELD_CALLER = "+15553333"


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database)
    try:
        yield c
    finally:
        await c.close()


async def api_delete(database: str, rec: Path, call_id: str) -> tuple[int, dict]:
    """DELETE /api/v1/calls/{id}/audio as an admin token, through the real server."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    server = HttpServer(api_settings(database, rec), pool)
    try:
        async with pool.acquire() as c:
            if not await c.fetchval("SELECT true FROM users WHERE name = 'admin1'"):
                await users.add_user(c, "admin1", "admin", PASSWORD, None)
            _, token = await users.create_token(c, f"t-{uuid.uuid4().hex[:6]}", user="admin1")
        await server.start()
        async with aiohttp.ClientSession() as http, http.delete(
                f"http://127.0.0.1:{server.port}/api/v1/calls/{call_id}/audio",
                headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()
    finally:
        await server.stop()
        await pool.close()


async def locked_batch(database: str, rec: Path, call_id: str, kind: str) -> str:
    """What a retention batch does with a row it locked: hand it to the gate."""
    c = await asyncpg.connect(database)
    try:
        async with c.transaction():
            row = await c.fetchrow(f"SELECT {GATE_COLUMNS} FROM calls WHERE id = $1::uuid FOR UPDATE", call_id)
            gate = anonymize_locked if kind == "metadata" else delete_locked_audio
            return (await gate(c, row, rec, actor="retention", reason="retention")).result
    finally:
        await c.close()


@pytest.mark.parametrize("path", ["api", "cli_subject_erase", "subject_erase", "retention_audio",
                                  "retention_metadata"])
async def test_every_deletion_path_refuses_a_held_call_through_the_gate(database: str, conn: asyncpg.Connection,
                                                                        tmp_path: Path, path: str) -> None:
    rec = tmp_path / "rec"
    held = await add_call(conn, rec, caller=HELD_CALLER, age_days=400)
    await set_legal_hold(conn, held["id"], True, actor="counsel", reason="case 77")
    if path == "api":
        status, body = await api_delete(database, rec, held["id"])
        assert (status, body) == (409, {"error": "the call is under legal hold"})
        actor, what = "admin1(token:", "audio"
    elif path == "cli_subject_erase":
        result = run_cli(write_config(tmp_path / "c.toml", database, rec), "subject", "erase", HELD_CALLER, "--yes")
        assert result.returncode == 3 and "legal hold (case 77)" in result.stdout, result.stdout + result.stderr
        actor, what = "cli:", "call"
    elif path == "subject_erase":
        pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
        try:
            [out] = await erase_subject(pool, [HELD_CALLER], rec, actor=cli_principal())
        finally:
            await pool.close()
        assert (out.result, out.detail) == ("held", "case 77")
        actor, what = "cli:", "call"
    else:
        kind = path.removeprefix("retention_")
        assert await locked_batch(database, rec, held["id"], kind) == "held"
        actor, what = "retention", "call" if kind == "metadata" else "audio"
    row = await conn.fetchrow("SELECT audio_deleted_at, anonymized_at, caller_number FROM calls WHERE id = $1",
                              held["id"])
    assert held["path"].exists() and row["audio_deleted_at"] is None and row["anonymized_at"] is None
    assert row["caller_number"] == HELD_CALLER
    [refusal] = await audit_rows(conn, held["id"], "delete_refused")
    assert refusal["actor"].startswith(actor) and refusal["details"]["what"] == what
    assert refusal["details"]["legal_hold"] == "case 77"
    assert await audit_rows(conn, held["id"], "delete_audio") == []


async def test_api_delete_goes_through_the_gate(database: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """The API used to delete what a symlink in the folder pointed to (another call's recording),
    and wrote its own audit entry: now the gate removes only the call's own path, never anything
    outside the folder, and audits it like every other deletion."""
    rec = tmp_path / "rec"
    linked = await add_call(conn, rec)
    victim = await add_call(conn, rec)
    linked["path"].unlink()
    linked["path"].symlink_to(victim["path"])
    status, body = await api_delete(database, rec, linked["id"])
    assert status == 200 and body["deleted_by"].startswith("admin1(token:") and body["file_missing"] is False
    assert victim["path"].exists() and not linked["path"].is_symlink()
    [entry] = await audit_rows(conn, linked["id"], "delete_audio")
    assert entry["remote"] == "127.0.0.1" and entry["role"] == "admin"
    assert entry["details"]["reason"] == "manual" and entry["details"]["file_existed"] is True
    assert entry["details"]["recording_path"] == linked["rel"]
    r = await conn.fetchrow("SELECT audio_deleted_at, audio_deleted_by, audio_deleted_reason FROM calls "
                            "WHERE id = $1", linked["id"])
    assert r["audio_deleted_reason"] == "manual" and r["audio_deleted_by"] == body["deleted_by"]
    assert r["audio_deleted_at"].isoformat() == body["deleted_at"]
    # A file that is already gone: deleted all the same, and the answer says the file was missing.
    gone = await add_call(conn, rec)
    gone["path"].unlink()
    status, body = await api_delete(database, rec, gone["id"])
    assert status == 200 and body["file_missing"] is True
    assert (await audit_rows(conn, gone["id"], "delete_audio"))[0]["details"]["file_existed"] is False
    # A symlink planted in the folder that leads out of it: nothing outside is touched.
    outside = tmp_path / "precious.wav"
    outside.write_bytes(b"keep me")
    planted = await add_call(conn, rec)
    planted["path"].unlink()
    planted["path"].symlink_to(outside)
    status, body = await api_delete(database, rec, planted["id"])
    assert status == 200 and body["file_missing"] is True and outside.read_bytes() == b"keep me"

