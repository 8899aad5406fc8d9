"""The ops API and the console under the documented least-privilege role (docs/sql/app_role.sql,
issue 10 item 12): log-in, the console's session endpoint, a search, a CSRF-checked change and
log-out all work with exactly those grants."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from support import REPO
from support.opsapi import PASSWORD, Bench

from callrec.access import verify_password
from callrec.web.server import HttpServer, api_pool_settings


@pytest.fixture
async def app_role_base(bench: Bench, conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A second API over the bench's database whose pool connects as a role with only the grants of
    docs/sql/app_role.sql (the bench's own users and calls are there)."""
    role = f"callrec_app_{uuid.uuid4().hex[:8]}"
    statements = [line.replace(':"app"', f'"{role}"') for line in (REPO / "docs" / "sql" / "app_role.sql")
                  .read_text().splitlines() if line.strip() and not line.startswith("--")]
    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        for statement in statements:
            await conn.execute(statement)
        parts = urlsplit(bench.dsn)
        dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3, server_settings=api_pool_settings(bench.settings))
        server = HttpServer(bench.settings, pool)
        try:
            await server.start()
            assert await pool.fetchval("SELECT current_user") == role
            yield f"http://127.0.0.1:{server.port}"
        finally:
            await server.stop()
            await pool.close()
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')


async def test_console_session_and_login_under_the_app_role(app_role_base: str, bench: Bench,
                                                             http: aiohttp.ClientSession) -> None:
    base = app_role_base
    async with http.post(f"{base}/api/v1/login", json={"username": "supervisor1", "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
    async with http.get(f"{base}/console/session") as r:
        assert r.status == 200, await r.text()
        session = await r.json()
    assert (session["user"], session["role"]) == ("supervisor1", "supervisor")
    csrf = {"X-CSRF-Token": session["csrf_token"]}
    async with http.get(f"{base}/api/v1/calls") as r:
        assert r.status == 200 and (await r.json())["items"]
    async with http.post(f"{base}/api/v1/calls/{bench.calls['mine']}/tags", json={"tag": "qa"}, headers=csrf) as r:
        assert r.status in (200, 201), await r.text()
    async with http.post(f"{base}/api/v1/logout", headers=csrf) as r:
        assert r.status == 200, await r.text()
    async with http.get(f"{base}/console/session") as r:
        assert r.status == 401
    actions = [r["action"] for r in await bench.pool.fetch("SELECT action FROM audit_log WHERE actor = 'supervisor1' "
                                                           "ORDER BY id")]
    assert actions == ["login", "search", "tag_add", "logout"]  # the search: its window's first page


def old_scrypt_hash(password: str) -> str:
    """A hash as callrec stored them before (N=2^14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${2**14}$8$1${salt.hex()}${digest.hex()}"


async def test_an_old_scrypt_hash_is_rehashed_at_log_in(app_role_base: str, bench: Bench,
                                                        http: aiohttp.ClientSession) -> None:
    old = old_scrypt_hash("old parameters pw")
    await bench.pool.execute("INSERT INTO users (name, role, password_hash) VALUES ('olduser', 'auditor', $1)", old)
    async with http.post(f"{app_role_base}/api/v1/login", json={"username": "olduser", "password": "wrong"}) as r:
        assert r.status == 401
    assert await bench.pool.fetchval("SELECT password_hash FROM users WHERE name = 'olduser'") == old
    async with http.post(f"{app_role_base}/api/v1/login",
                         json={"username": "olduser", "password": "old parameters pw"}) as r:
        assert r.status == 200, await r.text()
    stored = await bench.pool.fetchval("SELECT password_hash FROM users WHERE name = 'olduser'")
    assert stored.startswith(f"scrypt${2**17}$8$1$") and stored != old
    assert verify_password("old parameters pw", stored) and not verify_password("wrong", stored)
    # The next log-in verifies against the new hash and leaves it as it is.
    async with http.post(f"{app_role_base}/api/v1/login",
                         json={"username": "olduser", "password": "old parameters pw"}) as r:
        assert r.status == 200
    assert await bench.pool.fetchval("SELECT password_hash FROM users WHERE name = 'olduser'") == stored
    # New users get the new parameters.
    assert (await bench.pool.fetchval("SELECT password_hash FROM users WHERE name = 'admin1'")).startswith(
        f"scrypt${2**17}$8$1$")


async def test_alerts_and_their_rules_under_the_app_role(app_role_base: str, bench: Bench,
                                                         http: aiohttp.ClientSession) -> None:
    base = app_role_base
    admin = {"Authorization": f"Bearer {bench.tokens['admin']}"}
    rule = {"name": "complaint", "phrases": ["жалоба"]}
    async with http.post(f"{base}/api/v1/alert-rules", json=rule, headers=admin) as r:
        assert r.status == 201, await r.text()
    async with http.get(f"{base}/api/v1/alert-rules", headers=admin) as r:
        assert r.status == 200 and [x["name"] for x in (await r.json())["items"]] == ["complaint"]
    async with http.get(f"{base}/api/v1/alerts", headers=admin) as r:
        assert r.status == 200 and (await r.json()) == {"items": [], "next": None}
    async with http.delete(f"{base}/api/v1/alert-rules/complaint", headers=admin) as r:
        assert r.status == 200, await r.text()
