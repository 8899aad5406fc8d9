"""Running `callrec` as a real process in tests: its config file and waiting on its effects."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import asyncpg
from caller import Tester
from sandbox import SandboxInfo

CALLREC = [sys.executable, "-m", "callrec.cli"]


def write_config(path: Path, info: SandboxInfo, database: str, **changes: str) -> Path:
    values = {
        "ari_password": info.ari_password, "ami_password": info.ami_password, "ari_url": info.ari_url,
        "ami_port": str(info.ami_port), "dsn": database,
    }
    values.update(changes)
    path.write_text(f"""
[asterisk]
ari_url = "{values['ari_url']}"
ari_user = "{info.ari_user}"
ari_password = "{values['ari_password']}"
ami_host = "{info.ami_host}"
ami_port = {values['ami_port']}
ami_user = "{info.ami_user}"
ami_password = "{values['ami_password']}"
request_timeout = 2

[database]
dsn = "{values['dsn']}"

[recordings]
dir = "{info.recordings_dir}"
local_dir = "{info.local_recordings_dir}"

[notice]
prompts_dir = "{info.prompts_dir}"
local_prompts_dir = "{info.local_prompts_dir}"
decision_window = 1
""")
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
