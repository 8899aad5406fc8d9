"""`callrec calls | users | tokens | audit` as a real process against a real PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
from support.opsapi import AGENT_EXT, T0, insert_call

from callrec.access import sha256_hex, verify_password

CALLREC = [sys.executable, "-m", "callrec"]


def config(tmp_path: Path, dsn: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'[asterisk]\nari_password = "a"\nami_password = "b"\n[database]\ndsn = "{dsn}"\n'
                    f'[recordings]\ndir = "/var/spool/asterisk/callrec"\nlocal_dir = "{tmp_path}"\n')
    return path


def run(cfg: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CALLREC, "-c", str(cfg), *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


async def test_users_and_tokens(database: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, database)
    secret_pw = "s3cret-from-stdin"
    r = run(cfg, "users", "add", "ann", "--role", "agent", "--extension", AGENT_EXT, stdin=secret_pw + "\n")
    assert r.returncode == 0, r.stderr
    r = run(cfg, "users", "add", "bob", "--role", "agent", stdin=secret_pw + "\n")
    assert r.returncode == 2 and "extension" in r.stderr
    r = run(cfg, "users", "add", "ann", "--role", "admin", stdin=secret_pw + "\n")
    assert r.returncode == 2 and "exists" in r.stderr
    r = run(cfg, "users", "add", "short", "--role", "admin", stdin="abc\n")
    assert r.returncode == 2 and "password" in r.stderr
    r = run(cfg, "users", "list")
    assert r.returncode == 0 and "ann" in r.stdout and "agent" in r.stdout and secret_pw not in r.stdout
    conn = await asyncpg.connect(database)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE name = 'ann'")
        assert stored.startswith("scrypt$") and secret_pw not in stored and verify_password(secret_pw, stored)
        r = run(cfg, "tokens", "create", "ann-phone", "--user", "ann")
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        assert token.startswith("crt_") and len(token) > 40 and "shown only now" in r.stderr
        row = await conn.fetchrow("SELECT id, role, token_sha256 FROM api_tokens WHERE name = 'ann-phone'")
        assert row["role"] == "agent" and row["token_sha256"] == sha256_hex(token)
        r = run(cfg, "tokens", "create", "robot", "--role", "agent")
        assert r.returncode == 2 and "agent" in r.stderr
        listing = run(cfg, "tokens", "list")
        assert "ann-phone" in listing.stdout and token not in listing.stdout and token[4:14] not in listing.stdout
        assert run(cfg, "tokens", "revoke", str(row["id"])).returncode == 0
        assert run(cfg, "tokens", "revoke", str(row["id"])).returncode == 2
        assert await conn.fetchval("SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = $1", row["id"])
        assert run(cfg, "users", "disable", "ann").returncode == 0
        assert await conn.fetchval("SELECT disabled FROM users WHERE name = 'ann'")
        actions = [r["action"] for r in await conn.fetch("SELECT action FROM audit_log ORDER BY id")]
        assert actions == ["user_add", "token_create", "token_revoke", "user_disable"]
    finally:
        await conn.close()
    r = run(cfg, "audit", "--format", "json")
    entries = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["action"] for e in entries] == ["user_disable", "token_revoke", "token_create", "user_add"]
    assert all(e["actor"].startswith("cli:") for e in entries)
    assert token not in r.stdout and secret_pw not in r.stdout


async def test_calls_filters_and_formats(database: str, tmp_path: Path) -> None:
    from datetime import timedelta

    cfg = config(tmp_path, database)
    conn = await asyncpg.connect(database)
    try:
        a = await insert_call(conn, tmp_path, started=T0, agent="201", caller="+4930111", caller_name="Alice")
        b = await insert_call(conn, tmp_path, started=T0 + timedelta(minutes=1), agent="202", caller="+4930222",
                              recorded=False, consent="declined", caller_name="=cmd|' /C calc'!A0")
        await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, 'vip', 't')", uuid.UUID(a))
    finally:
        await conn.close()
    r = run(cfg, "calls", "--format", "csv", "--agent", "202")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert r.returncode == 0 and [x["id"] for x in rows] == [b]
    assert rows[0]["caller_name"].startswith("'=")  # no formula when opened in a spreadsheet
    r = run(cfg, "calls", "--format", "json", "--tag", "vip")
    assert [x["id"] for x in json.loads(r.stdout)] == [a]
    r = run(cfg, "calls", "--recorded", "false", "--json")
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [b]
    r = run(cfg, "calls", "-n", "1", "--order", "asc")
    assert r.returncode == 0 and a in r.stdout and b not in r.stdout and "more: --cursor" in r.stderr
    cursor = r.stderr.split("--cursor ")[1].strip()
    r = run(cfg, "calls", "-n", "1", "--order", "asc", "--cursor", cursor)
    assert b in r.stdout and a not in r.stdout and "more:" not in r.stderr
    r = run(cfg, "calls", "--all", "--format", "csv", "--number", "+4930*")
    assert {x["id"] for x in csv.DictReader(io.StringIO(r.stdout))} == {a, b}
    r = run(cfg, "calls", "--from", "yesterday")
    assert r.returncode == 2 and r.stderr.startswith("callrec: from:")
    assert run(cfg, "calls", "--all").returncode == 2
    r = run(cfg, "audit", "--action", "export", "--format", "json")
    exports = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(exports) == 3 and exports[0]["details"]["via"] == "cli" and exports[0]["details"]["all"] is True
