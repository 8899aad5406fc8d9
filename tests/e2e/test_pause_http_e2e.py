"""Pause / resume through the ops API of a running daemon, on a real recorded call.

The same MixMonitorMute path as the CLI and the agents' key (tests/test_recording_e2e.py); here the
HTTP surface: roles, visibility, the recording_pauses row with source ``api``, the audit trail,
and the silence in the file.
"""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg
import soundfile
from caller import Finished, Tester
from sandbox import SandboxInfo
from test_recording_e2e import TONE, connect_agent, place, row, silent_runs, tone_start, wait_heard, wait_silent

from callrec.app import Daemon
from callrec.store import users


async def tokens(dsn: str) -> dict[str, dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    out = {}
    try:
        for role, ext in (("supervisor", None), ("auditor", None), ("agent", "999")):
            await users.add_user(conn, f"{role}1", role, "pw-" + uuid.uuid4().hex, ext)
            _, secret = await users.create_token(conn, f"{role}-token", user=f"{role}1")
            out[role] = {"Authorization": f"Bearer {secret}"}
    finally:
        await conn.close()
    return out


async def test_pause_and_resume_over_http_leave_silence_and_are_audited(
        api_daemon: Daemon, asterisk: SandboxInfo, database: str, tester: Tester, finished: Finished) -> None:
    auth = await tokens(database)
    assert api_daemon.http is not None and api_daemon.http.port
    base = f"http://127.0.0.1:{api_daemon.http.port}/api/v1"
    call, call_id = await place(tester, "300")
    await connect_agent(tester, call, set())
    await tone_start(tester, await call.speak(TONE))  # the caller talks: MixMonitor writes as audio flows
    assert api_daemon.writer is not None and await api_daemon.writer.flush()
    path = asterisk.local_recordings_dir / (await row(database, call_id))["recording_path"]
    async with aiohttp.ClientSession() as http:
        # The auditor has no pause right; an agent does not see another agent's call.
        async with http.post(f"{base}/calls/{call_id}/pause", headers=auth["auditor"]) as r:
            assert r.status == 403
        async with http.post(f"{base}/calls/{call_id}/pause", headers=auth["agent"]) as r:
            assert r.status == 404
        async with http.post(f"{base}/calls/{call_id}/resume", headers=auth["supervisor"]) as r:
            assert r.status == 409 and "not paused" in (await r.json())["error"]
        await wait_heard(path, 1.0)
        async with http.post(f"{base}/calls/{call_id}/pause", headers=auth["supervisor"]) as r:
            assert r.status == 200, await r.text()
            paused = await r.json()
        assert (paused["seq"], paused["paused_by"], paused["pause_source"]) == \
            (1, "supervisor1(token:supervisor-token)", "api")
        async with http.post(f"{base}/calls/{call_id}/pause", headers=auth["supervisor"]) as r:
            assert r.status == 409
        await wait_silent(path, 1.5)
        async with http.post(f"{base}/calls/{call_id}/resume", headers=auth["supervisor"]) as r:
            assert r.status == 200
            resumed = await r.json()
        assert resumed["resumed_at"] and resumed["resume_source"] == "api"
        await wait_heard(path, 1.0)
        async with http.get(f"{base}/calls/{call_id}", headers=auth["supervisor"]) as r:
            detail = await r.json()
        assert [(p["seq"], p["pause_source"], p["resume_source"]) for p in detail["pauses"]] == [(1, "api", "api")]
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert await api_daemon.writer.flush()
    samples, rate = soundfile.read(str(path), dtype="int16")
    runs = silent_runs(samples, rate, 1.0)
    assert len(runs) == 1, runs  # the paused stretch, and only it
    assert api_daemon.pool is not None
    actions = [r["action"] for r in await api_daemon.pool.fetch(
        "SELECT action FROM audit_log WHERE call_id = $1 ORDER BY id", uuid.UUID(call_id))]
    assert actions.count("recording_pause") == 1 and actions.count("recording_resume") == 1
