"""Schemathesis fuzzes the API from its own OpenAPI description, with a valid admin token:
no request it makes may get a 5xx."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opsapi import Bench, start_bench


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    b = await start_bench(database, tmp_path)
    try:
        yield b
    finally:
        await b.server.stop()
        await b.pool.close()


async def test_schemathesis_finds_no_server_error(bench: Bench, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callrec.http")
    exe = Path(sys.executable).with_name("schemathesis")
    # The server runs in this event loop: the fuzzer must be a child process awaited asynchronously.
    proc = await asyncio.create_subprocess_exec(
        str(exe), "run", f"{bench.base}/api/v1/openapi.json", "--url", bench.base,
        "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "4", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--generation-database", "none", "--no-color",
        "--request-timeout", "20", "--header", f"Authorization: Bearer {bench.tokens['admin']}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=500)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "500 Internal" not in caplog.text and " 500 " not in caplog.text
    # It really exercised the API (not just the schema download).
    assert caplog.text.count(" /api/v1/calls") > 100, text[-3000:]
