"""Fixtures of the real components: the sandbox Asterisk 22, a PostgreSQL database per test, the
daemon, the caller.

Nothing here skips: a test that needs Asterisk or PostgreSQL and cannot get it fails with the
reason.  The sandbox is started once per test session (built first if the cache lacks it) and
stopped at the end unless CALLREC_KEEP_SANDBOX=1.  The session holds its slot's lock
(tools/sandbox.py) from collection on: a second run on the same slot stops at once, naming this one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import sandbox as sandbox_mod
import testdb
from caller import Finished, Tester
from support.daemon_proc import running_daemon
from support.opsapi import Bench, running_bench
from support.settings import make_settings

from callrec.app import Daemon
from callrec.asterisk.ari import Ari
from callrec.config.settings import Settings
from callrec.store import migrate


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Claim the sandbox slot before the first test runs when any selected test needs Asterisk, so a
    run on a busy slot ends at once with the other run named (not with a stopped Asterisk later)."""
    if config.option.collectonly or not any("sandbox" in getattr(i, "fixturenames", ()) for i in items):
        return
    try:
        sandbox_mod.Sandbox().claim()
        if any("sandbox2" in getattr(i, "fixturenames", ()) for i in items):
            sandbox_mod.Sandbox(slot=sandbox_mod.second_slot()).claim()
    except sandbox_mod.SlotBusy as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


def _running(box: sandbox_mod.Sandbox, what: str) -> Iterator[sandbox_mod.Sandbox]:
    """Start ``box`` for the session (a busy slot ends the run, any other failure fails the tests that need it);
    stopped at the end unless CALLREC_KEEP_SANDBOX=1."""
    try:
        box.start()
    except sandbox_mod.SlotBusy as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    except Exception as exc:
        pytest.fail(f"{what} could not be started: {exc}", pytrace=False)
    yield box
    if os.environ.get("CALLREC_KEEP_SANDBOX") != "1":
        box.stop()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[sandbox_mod.Sandbox]:
    yield from _running(sandbox_mod.Sandbox(), "the sandbox Asterisk 22")


@pytest.fixture(scope="session")
def sandbox2(sandbox: sandbox_mod.Sandbox) -> Iterator[sandbox_mod.Sandbox]:
    """A second sandbox Asterisk (another PBX node) on slot CALLREC_SANDBOX_SLOT2, default
    (CALLREC_SANDBOX_SLOT + 5) % 10."""
    box = sandbox_mod.Sandbox(slot=sandbox_mod.second_slot())
    yield from _running(box, f"the second sandbox Asterisk 22 (slot {box.slot})")


@pytest.fixture
def asterisk2(sandbox2: sandbox_mod.Sandbox) -> sandbox_mod.SandboxInfo:
    """The second sandbox, checked before each test like ``asterisk``."""
    info = sandbox2.info()
    if not _ari_answers(info):
        warnings.warn("second sandbox Asterisk stopped answering ARI; restarting it", stacklevel=1)
        sandbox2.stop()
        sandbox2.start()
        if not _ari_answers(info):
            pytest.fail("the second sandbox Asterisk does not answer ARI even after a restart", pytrace=False)
    return info


def _ari_answers(info: sandbox_mod.SandboxInfo, timeout: float = 4.0) -> bool:
    """REST and an events-websocket handshake both complete (an app with no subscriptions)."""

    async def probe() -> bool:
        ari = Ari(info.ari_url, info.tester_ari_user, info.tester_ari_password, f"callrec-probe-{uuid.uuid4().hex[:6]}")
        try:
            async with asyncio.timeout(timeout):
                await ari.info()
                ws = await ari.session.ws_connect(ari.events_url())
                await ws.close()
            return True
        except Exception:
            return False
        finally:
            await ari.close()

    return asyncio.run(probe())


@pytest.fixture
def asterisk(sandbox: sandbox_mod.Sandbox) -> sandbox_mod.SandboxInfo:
    """The sandbox, checked before each test.

    Asterisk 22.10.1 was seen to stop serving HTTP (websocket handshakes hang) after the test
    caller's subscribe-all websocket was closed while a stopped daemon's channels were still
    producing events.  That wedge is in the test bench's Asterisk, not in the code under test,
    so the bench restarts Asterisk (loudly) instead of failing the next, unrelated test.
    """
    info = sandbox.info()
    if not _ari_answers(info):
        warnings.warn("sandbox Asterisk stopped answering ARI; restarting it", stacklevel=1)
        print("\n[bench] sandbox Asterisk stopped answering ARI; restarting it", file=sys.stderr)
        sandbox.stop()
        sandbox.start()
        if not _ari_answers(info):
            pytest.fail("the sandbox Asterisk does not answer ARI even after a restart", pytrace=False)
    return info


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    try:
        return testdb.ensure_postgres()
    except Exception as exc:
        pytest.fail(f"no PostgreSQL for the tests: {exc}", pytrace=False)


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def database(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"callrec_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_db(pg_admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database (closed afterwards)."""
    c = await asyncpg.connect(database)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def settings(asterisk: sandbox_mod.SandboxInfo, database: str) -> Settings:
    return make_settings(asterisk, database)


@pytest.fixture
def finished() -> Finished:
    return Finished()


@pytest.fixture
async def daemon(settings: Settings, finished: Finished) -> AsyncIterator[Daemon]:
    async with running_daemon(settings, finished) as d:
        yield d


@pytest.fixture
async def api_daemon(asterisk: sandbox_mod.SandboxInfo, database: str, finished: Finished) -> AsyncIterator[Daemon]:
    """The daemon with its ops API (and console) on a free port: ``api_daemon.http.port``."""
    settings = make_settings(asterisk, database, http={"enabled": True, "listen": "127.0.0.1:0"})
    async with running_daemon(settings, finished) as d:
        yield d


@pytest.fixture
async def bench(database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Bench]:
    """The ops API over the test's database with users, tokens and calls of every kind
    (support/opsapi.py), every log captured at DEBUG (tests look for secrets in it).  Modules with
    a bench of their own define a fixture of this name."""
    caplog.set_level(logging.DEBUG)
    async with running_bench(database, tmp_path) as b:
        yield b


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that keeps cookies for 127.0.0.1 (console sessions)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


@pytest.fixture
async def tester(asterisk: sandbox_mod.SandboxInfo) -> AsyncIterator[Tester]:
    t = Tester(asterisk.ari_url, asterisk.tester_ari_user, asterisk.tester_ari_password)
    try:
        await t.start()
        yield t
    finally:
        await t.close()
