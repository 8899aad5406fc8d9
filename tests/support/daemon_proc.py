"""The daemon in tests: in this process (``running_daemon``) or as a real `callrec serve` process (its
config file), and waiting on its effects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from caller import Finished, Tester
from sandbox import SandboxInfo, callrec_config

from callrec.app import Daemon
from callrec.config.settings import Settings
from support.cli import CALLREC
from support.waiting import wait_for

__all__ = ["CALLREC", "call_row", "running_daemon", "wait_finalized", "wait_registered", "wait_row", "write_config"]


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings, finished: Finished) -> AsyncIterator[Daemon]:
    """The daemon in this process, connected to ARI and AMI; finalized calls reach ``finished``."""
    d = Daemon(settings)
    try:
        await d.start()
        assert d.service is not None
        d.service.on_call_finalized.append(finished)
        await d.wait_ready(15)
        yield d
    finally:
        await d.stop()


async def call_row(dsn: str, uniqueid: str) -> asyncpg.Record:
    """The call's row in the call log (it must be there)."""
    conn = await asyncpg.connect(dsn)
    try:
        r = await conn.fetchrow("SELECT * FROM calls WHERE uniqueid = $1", uniqueid)
    finally:
        await conn.close()
    assert r is not None, f"no call-log row for {uniqueid}"
    return r


def write_config(path: Path, info: SandboxInfo, database: str, **asterisk: object) -> Path:
    """The sandbox config with a short decision window; ``asterisk`` overrides (wrong passwords...)."""
    dsn = str(asterisk.pop("dsn", database))
    path.write_text(callrec_config(info, dsn, asterisk={"request_timeout": 2, **asterisk},
                                   notice={"decision_window": 1}))
    return path


async def wait_registered(tester: Tester, timeout: float = 15) -> None:
    async def registered() -> bool:
        apps = await tester.ari.request("GET", "/applications")
        return any(a.get("name") == "callrec" for a in apps)

    await wait_for(registered, timeout, what="the callrec ARI application to register", interval=0.1)


async def wait_finalized(dsn: str, uniqueid: str, timeout: float = 30) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await wait_for(lambda: conn.fetchval("SELECT finalized_at IS NOT NULL FROM calls WHERE uniqueid = $1",
                                             uniqueid),
                       timeout, what=f"call {uniqueid} to be finalized in the call log", interval=0.1)
    finally:
        await conn.close()


async def wait_row(dsn: str, uniqueid: str, timeout: float = 10) -> None:
    """Until the daemon has written the call's row (it writes in the background)."""
    conn = await asyncpg.connect(dsn)
    try:
        await wait_for(lambda: conn.fetchval("SELECT count(*) FROM calls WHERE uniqueid = $1", uniqueid),
                       timeout, what=f"a call-log row for {uniqueid}")
    finally:
        await conn.close()
