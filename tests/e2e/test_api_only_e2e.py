"""`callrec serve --api-only` (issue 12, item 1): the HTTP API and console without Asterisk, several of them
on one PostgreSQL as behind a load balancer.  The log-in throttle, sessions and the per-user export limit hold
across the processes, because they live in the database."""

from __future__ import annotations

import asyncio
import datetime
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.daemon_proc import CALLREC
from support.waiting import wait_for

PASSWORD = "api-only-pw-1"
T0 = datetime.datetime(2026, 1, 5, 9, tzinfo=datetime.UTC)
# This test database's advisory locks (pg_locks is the whole cluster's).
ADVISORY = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


class ApiProcess:
    def __init__(self, tmp_path: Path, database: str, name: str) -> None:
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        # No [asterisk] section at all: an API-only host needs no Asterisk credentials.
        self.config = tmp_path / f"{name}.toml"
        self.config.write_text(
            f'[database]\ndsn = "{database}"\njournal_dir = "{tmp_path / name}-journal"\n'
            f'[http]\nenabled = true\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = "127.0.0.1:0"\n'
            f'[node]\nname = "{name}"\n')
        self.proc = subprocess.Popen([*CALLREC, "-c", str(self.config), "serve", "--api-only"],
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        self.base = self.metrics = ""

    def log(self) -> str:
        return self.log_path.read_text()

    async def started(self) -> None:
        def ports() -> tuple[str, str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            api = re.search(r"ops API listening on (http://127\.0\.0\.1:\d+)/api/v1/", self.log())
            metrics = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", self.log())
            return (api.group(1), metrics.group(1)) if api and metrics else None

        self.base, self.metrics = await wait_for(ports, 30, what=f"{self.name} to listen", details=self.log)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
async def pair(database: str, tmp_path: Path) -> AsyncIterator[tuple[ApiProcess, ApiProcess]]:
    admin_cfg = tmp_path / "admin.toml"
    admin_cfg.write_text(f'[asterisk]\nari_password = "x"\nami_password = "y"\n[database]\ndsn = "{database}"\n')
    for user, role in (("alice", "supervisor"), ("bob", "supervisor")):
        r = subprocess.run([*CALLREC, "-c", str(admin_cfg), "users", "add", user, "--role", role],
                           input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    a, b = ApiProcess(tmp_path, database, "api-1"), ApiProcess(tmp_path, database, "api-2")
    try:
        await a.started()
        await b.started()
        yield a, b
    finally:
        codes = (a.stop(), b.stop())
    assert codes == (0, 0)


async def login(http: aiohttp.ClientSession, base: str, user: str, password: str) -> aiohttp.ClientResponse:
    async with http.post(f"{base}/api/v1/login", json={"username": user, "password": password}) as resp:
        await resp.read()
        return resp


async def test_api_only_is_ready_without_asterisk_and_heartbeats(pair: tuple[ApiProcess, ApiProcess],
                                                                database: str, tmp_path: Path) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as http:
        for p in (a, b):
            async with http.get(f"{p.metrics}/ready") as resp:
                assert resp.status == 200 and (await resp.json())["parts"] == {"database": True}
    for p in (a, b):
        assert "no ARI, AMI or FastAGI" in p.log() and "Traceback" not in p.log()
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT name, kind FROM nodes ORDER BY name")
    finally:
        await conn.close()
    assert [(r["name"], r["kind"]) for r in rows] == [("api-1", "api"), ("api-2", "api")]
    # A third process under a name in use: it says so (each node's name must be its own).
    (tmp_path / "dup").mkdir()
    dup = ApiProcess(tmp_path / "dup", database, "api-1")
    try:
        await dup.started()
        await wait_for(lambda: "a heartbeat under this name was written" in dup.log(), 10,
                       what="the warning about a name in use", details=dup.log)
    finally:
        assert dup.stop() == 0
    assert "name was written" not in a.log() + b.log()


async def test_failed_log_ins_on_one_process_lock_out_on_the_other(pair: tuple[ApiProcess, ApiProcess],
                                                                  database: str) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            assert (await login(http, a.base, "alice", "wrong")).status == 401
        # The sixth attempt goes to the other process: it knows of the five failures.
        blocked = await login(http, b.base, "alice", PASSWORD)
        assert blocked.status == 429 and 25 <= int(blocked.headers["Retry-After"]) <= 30
        assert (await login(http, a.base, "alice", PASSWORD)).status == 429
        # Another user from the same address is not held up (per user and address).
        assert (await login(http, b.base, "bob", PASSWORD)).status == 200
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM login_failures WHERE key = 'user:alice@127.0.0.1'") == 5
        failed = await conn.fetch("SELECT details->>'reason' AS reason FROM audit_log WHERE action = 'login_failed' "
                                  "ORDER BY id")
    finally:
        await conn.close()
    assert [r["reason"] for r in failed] == ["wrong password"] * 5 + ["throttled"] * 2


async def test_a_session_made_on_one_process_works_on_the_other(pair: tuple[ApiProcess, ApiProcess]) -> None:
    a, b = pair
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{a.base}/api/v1/login", json={"username": "alice", "password": PASSWORD}) as resp:
            assert resp.status == 200
            csrf = (await resp.json())["csrf_token"]
        async with http.get(f"{b.base}/api/v1/me") as resp:
            assert resp.status == 200 and (await resp.json())["user"] == "alice"
        # A change through the other process, with the CSRF token the first one gave: the log-out ends the
        # session everywhere.
        async with http.post(f"{b.base}/api/v1/logout", headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
        cookie = "callrec_session"
        assert cookie not in {c.key for c in http.cookie_jar}
    async with aiohttp.ClientSession() as fresh:
        async with fresh.get(f"{a.base}/api/v1/me") as resp:
            assert resp.status == 401


async def _session_cookie(base: str, user: str) -> str:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{base}/api/v1/login", json={"username": user, "password": PASSWORD}) as resp:
            assert resp.status == 200
        return next(c.value for c in http.cookie_jar if c.key == "callrec_session")


async def _stalled_export(base: str, cookie: str) -> socket.socket:
    """An export whose client never reads (a tiny receive buffer): it holds its export for as long as that."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, (f"GET /api/v1/calls/export?format=json HTTP/1.1\r\nHost: {host}\r\n"
                                   f"Connection: close\r\nCookie: callrec_session={cookie}\r\n\r\n").encode())
    return sock


async def _none(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(ADVISORY) == 0


async def test_the_export_limit_holds_across_processes(pair: tuple[ApiProcess, ApiProcess], database: str) -> None:
    a, b = pair
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            """INSERT INTO calls (id, door, uniqueid, channel, caller_number, called_number, consent_mode, state,
                   consent, started_at, ended_at, finalized_at, recording_status, node)
               SELECT gen_random_uuid(), 'ari', 'bulk.' || i, 'PJSIP/x-1', '+4930' || i, '100', 'notice', 'ended',
                      'implied', $1::timestamptz + i * interval '1 second', $1::timestamptz + i * interval '2 second',
                      $1::timestamptz + i * interval '2 second', 'none', 'pbx-1'
               FROM generate_series(1, 30000) AS i""", T0)
        alice_a, alice_b = await _session_cookie(a.base, "alice"), await _session_cookie(b.base, "alice")
        bob_b = await _session_cookie(b.base, "bob")

        stalled = await _stalled_export(a.base, alice_a)
        try:
            await wait_for(lambda: conn.fetchval(ADVISORY), 20, what="alice's export on api-1 to hold its lock")
            async with aiohttp.ClientSession() as http:
                # The same user on the other process: refused at once.
                async with http.get(f"{b.base}/api/v1/calls/export?format=csv",
                                    headers={"Cookie": f"callrec_session={alice_b}"}) as resp:
                    assert resp.status == 429
                    assert "already have an export running" in (await resp.json())["error"]
                # Another user is not held up.
                async with http.get(f"{b.base}/api/v1/calls/export?format=csv",
                                    headers={"Cookie": f"callrec_session={bob_b}"}) as resp:
                    assert resp.status == 200
                    assert (await resp.read()).count(b"\n") == 30000 + 1  # header + rows, LF (COPY)
        finally:
            stalled.close()
        # The stalled export ends (its client is gone): alice may export again, through either process.
        await wait_for(lambda: _none(conn), 30, what="the stalled export's lock to go")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{b.base}/api/v1/calls/export?format=csv",
                                headers={"Cookie": f"callrec_session={alice_b}"}) as resp:
                assert resp.status == 200
                await resp.read()
    finally:
        await conn.close()
