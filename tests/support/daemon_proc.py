"""Running `callrec` as a real process in tests: its config file and waiting on its effects."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import asyncpg
from caller import Tester
from sandbox import SandboxInfo, callrec_config

CALLREC = [sys.executable, "-m", "callrec"]


def write_config(path: Path, info: SandboxInfo, database: str, **asterisk: object) -> Path:
    """The sandbox config with a short decision window; ``asterisk`` overrides (wrong passwords...)."""
    dsn = str(asterisk.pop("dsn", database))
    path.write_text(callrec_config(info, dsn, asterisk={"request_timeout": 2, **asterisk},
                                   notice={"decision_window": 1}))
    return path


async def wait_registered(tester: Tester, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        apps = await tester.ari.request("GET", "/applications")
        if any(a.get("name") == "callrec" for a in apps):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the callrec ARI application did not register")


async def wait_finalized(dsn: str, uniqueid: str, timeout: float = 30) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT finalized_at IS NOT NULL FROM calls WHERE uniqueid = $1", uniqueid):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError(f"call {uniqueid} not finalized in the call log")


async def wait_row(dsn: str, uniqueid: str, timeout: float = 10) -> None:
    """Until the daemon has written the call's row (it writes in the background)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT count(*) FROM calls WHERE uniqueid = $1", uniqueid):
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError(f"no call-log row for {uniqueid}")
