"""End to end: a real call through the sandbox Asterisk is recorded by the daemon, then found,
streamed (with a seek) and downloaded through the API that the same daemon serves."""

from __future__ import annotations

import hashlib
import logging
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from caller import Finished, Tester
from sandbox import SandboxInfo, callrec_config
from support.daemon_proc import CALLREC, running_daemon, wait_registered
from support.settings import make_settings

from callrec.app import Daemon
from callrec.store import users


async def test_recorded_call_found_streamed_downloaded(api_daemon: Daemon, tester: Tester, finished: Finished,
                                                       database: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    conn = await asyncpg.connect(database)
    try:
        await users.add_user(conn, "sup", "supervisor", None)
        await users.add_user(conn, "agent9", "agent", None, extension="9999")
        _, sup_token = await users.create_token(conn, "sup-t", user="sup")
        _, agent_token = await users.create_token(conn, "agent-t", user="agent9")
    finally:
        await conn.close()
    call = await tester.place_call(args="mode=notice")
    await call.answered()
    back = await call.handed_back()
    assert back["consent"] == "implied"
    await call.spoken(await call.speak())
    await call.hang_up()
    await finished.wait(call.callee_id)
    assert api_daemon.writer is not None and await api_daemon.writer.flush()
    assert api_daemon.http is not None and api_daemon.http.port
    base = f"http://127.0.0.1:{api_daemon.http.port}/api/v1"
    sup = {"Authorization": f"Bearer {sup_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/calls", params={"number": "5551*", "recorded": "true"}, headers=sup) as r:
            assert r.status == 200
            items = (await r.json())["items"]
        assert len(items) == 1 and items[0]["caller_number"] == "5551000"
        call_id = items[0]["id"]
        async with http.get(f"{base}/calls/{call_id}", headers=sup) as r:
            detail = await r.json()
        assert detail["uniqueid"] == call.callee_id and detail["evidence"]["completed"] is True
        assert detail["evidence"]["notice_prompt"].endswith("/en/notice.wav")
        rec = detail["recording"]
        assert rec["status"] == "ready" and rec["available"]
        async with http.get(f"{base}/calls/{call_id}/audio", headers=sup) as r:
            assert r.status == 200 and r.content_type == "audio/wav"
            whole = await r.read()
        assert hashlib.sha256(whole).hexdigest() == rec["sha256"] and len(whole) == rec["bytes"]
        async with http.get(f"{base}/calls/{call_id}/audio", headers={**sup, "Range": "bytes=44-"}) as r:
            assert r.status == 206 and await r.read() == whole[44:]
        async with http.get(f"{base}/calls/{call_id}/audio?download=1", headers=sup) as r:
            assert r.status == 200 and r.headers["Content-Disposition"].startswith("attachment")
            assert await r.read() == whole
        # Not the agent's call: the agent gets a 404 for it and an empty search.
        agent = {"Authorization": f"Bearer {agent_token}"}
        async with http.get(f"{base}/calls/{call_id}/audio", headers=agent) as r:
            assert r.status == 404
        async with http.get(f"{base}/calls", headers=agent) as r:
            assert (await r.json())["items"] == []
    conn = await asyncpg.connect(database)
    try:
        trail = [(r["actor"], r["action"]) for r in await conn.fetch(
            "SELECT actor, action FROM audit_log WHERE call_id = $1 ORDER BY id", detail["id"])]
    finally:
        await conn.close()
    assert trail == [("sup(token:sup-t)", "view"), ("sup(token:sup-t)", "listen"), ("sup(token:sup-t)", "download"),
                     ("agent9(token:agent-t)", "access_denied")]  # the agent's 404: a hidden call, audited
    assert sup_token not in caplog.text and agent_token not in caplog.text


async def test_policy_rule_makes_calls_confidential(asterisk: SandboxInfo, database: str, finished: Finished,
                                                    tester: Tester) -> None:
    """[[policy.rules]] confidential = true: the daemon's call is confidential from its first row."""
    settings = make_settings(asterisk, database, http={"enabled": True, "listen": "127.0.0.1:0"},
                             policy={"mode": "notice", "rules": [{"name": "board", "caller": "5551*",
                                                                  "confidential": True}]})
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO confidential_policy_rules VALUES ('stale-rule')")
        await users.add_user(conn, "sup", "supervisor", None)
        await users.add_user(conn, "sec", "security", None)
        _, sup_token = await users.create_token(conn, "sup-t", user="sup")
        _, sec_token = await users.create_token(conn, "sec-t", user="sec")
    finally:
        await conn.close()
    async with running_daemon(settings, finished) as d:
        call = await tester.place_call()
        await call.answered()
        assert (await call.handed_back())["consent"] == "implied"
        await call.hang_up()
        await finished.wait(call.callee_id)
        assert d.writer is not None and await d.writer.flush()
        assert d.http is not None
        base = f"http://127.0.0.1:{d.http.port}/api/v1"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/calls", headers={"Authorization": f"Bearer {sup_token}"}) as r:
                assert (await r.json())["items"] == []
            async with http.get(f"{base}/calls", headers={"Authorization": f"Bearer {sec_token}"}) as r:
                items = (await r.json())["items"]
            assert len(items) == 1 and items[0]["confidential"] is True
            one = f"{base}/calls/{items[0]['id']}"
            async with http.get(one, headers={"Authorization": f"Bearer {sup_token}"}) as r:
                assert r.status == 404
            async with http.get(one, headers={"Authorization": f"Bearer {sec_token}"}) as r:
                detail = await r.json()
            assert detail["policy_rule"] == "board" and detail["confidential_by"] == "policy:board"
    conn = await asyncpg.connect(database)
    try:
        assert [r["rule"] for r in await conn.fetch("SELECT rule FROM confidential_policy_rules")] == ["board"]
    finally:
        await conn.close()


async def test_callrec_serve_process_serves_the_api_and_logs_no_secrets(
        asterisk: SandboxInfo, database: str, tester: Tester, tmp_path: Path) -> None:
    """The real `callrec serve` process with [http] on: log-in, token use, stop; its log has none of
    the secrets."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "c.toml"
    cfg.write_text(callrec_config(asterisk, database, http={"enabled": True, "listen": f"127.0.0.1:{port}"},
                                  log={"level": "debug"}))
    conn = await asyncpg.connect(database)
    try:
        await users.add_user(conn, "adm", "admin", "pass-word-42")
        _, token = await users.create_token(conn, "adm-t", user="adm")
    finally:
        await conn.close()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([*CALLREC, "-c", str(cfg), "serve"], stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_registered(tester)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json())["database"] is True
            async with http.post(f"{base}/api/v1/login", json={"username": "adm", "password": "pass-word-42"}) as r:
                assert r.status == 200
                csrf = (await r.json())["csrf_token"]
            async with http.get(f"{base}/api/v1/me") as r:
                assert (await r.json())["user"] == "adm"
            async with http.get(f"{base}/api/v1/calls", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
            async with http.get(f"{base}/api/v1/calls?token={token}") as r:
                assert r.status == 400
            async with http.post(f"{base}/api/v1/login", json={"username": "adm", "password": "wrong-pass-1"}) as r:
                assert r.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log.close()
    served = (tmp_path / "serve.log").read_text()
    assert f"127.0.0.1:{port}" in served and "/api/v1/me 200" in served
    for secret in (token, token[4:20], "pass-word-42", "wrong-pass-1", csrf, asterisk.ari_password,
                   asterisk.ami_password):
        assert secret not in served
