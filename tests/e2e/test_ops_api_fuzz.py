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
from support.opsapi import Bench, running_bench

HOOKS = """
import itertools

import schemathesis

IDS_LIST = @SEEDED_IDS@
# Cycle: each seeded id in turn, then one generated id left as it is (the 404 path).
_turn = itertools.cycle(range(len(IDS_LIST) + 1))


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if path_parameters and "id" in path_parameters:
        pick = next(_turn)
        if pick < len(IDS_LIST):
            path_parameters["id"] = IDS_LIST[pick]
    return path_parameters
"""


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[Bench]:
    async with running_bench(database, tmp_path) as b:
        yield b


async def test_schemathesis_finds_no_server_error(bench: Bench, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callrec.http")
    exe = Path(sys.executable).with_name("schemathesis")
    # Random UUIDs alone would only ever reach the 404 path: a hook points most generated ids at
    # the seeded calls, so detail, audio, tags, confidential and delete run on real rows too.
    hooks = tmp_path / "st_hooks.py"
    hooks.write_text(HOOKS.replace("@SEEDED_IDS@", repr(sorted(bench.calls.values()))))
    # The server runs in this event loop: the fuzzer must be a child process awaited asynchronously.
    proc = await asyncio.create_subprocess_exec(
        str(exe), "run", f"{bench.base}/api/v1/openapi.json", "--url", bench.base,
        "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "4", "--workers", "1",
        "--phases", "examples,coverage,fuzzing", "--generation-database", "none", "--no-color",
        "--request-timeout", "20", "--header", f"Authorization: Bearer {bench.tokens['admin']}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(hooks)})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=500)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "500 Internal" not in caplog.text and " 500 " not in caplog.text
    # It really exercised the API (not just the schema download), on the seeded calls too.
    assert caplog.text.count(" /api/v1/calls") > 100, text[-3000:]
    reached = [i for i in bench.calls.values() if f"GET /api/v1/calls/{i} 200" in caplog.text]
    assert len(reached) >= len(bench.calls) // 2, reached
    assert any(f"GET /api/v1/calls/{i}/audio 20" in caplog.text for i in bench.calls.values())
    # The player's endpoints (issue 13) on real rows too.
    for suffix in ("timeline", "waveform", "readers"):
        assert any(f"GET /api/v1/calls/{i}/{suffix} 200" in caplog.text for i in bench.calls.values()), suffix
