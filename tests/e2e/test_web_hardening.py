"""Hardening of the ops API (issue 10): every listen audited whatever its Range, symlinked
recordings refused, auditors' view of the trail, throttled log-ins aggregated, no secrets through
oversized headers, and the small ones (nested cursor, export headers, pause/resume 503)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.dataops_helpers import run_cli, write_config
from support.opsapi import AGENT_EXT, PASSWORD, T0, Bench, audit_rows, call, insert_call

from callrec.config.dataops import IntegritySettings
from callrec.dataops.evidence import generate_key
from callrec.web import routes_auth, routes_calls
from callrec.web.server import HttpServer


async def new_call(bench: Bench, minutes: int, **kw: object) -> str:
    async with bench.pool.acquire() as conn:
        return await insert_call(conn, bench.rec_dir, started=T0 + timedelta(days=1, minutes=minutes),
                                 agent=AGENT_EXT, **kw)  # type: ignore[arg-type]


# --- 1. every listen/download audited whatever its Range -----------------------------------------

# Sequences a reader could use to get the audio without ever asking for byte 0.
RANGE_SEQUENCES = {
    "from byte 1": ["bytes=1-"],
    "after the header": ["bytes=44-"],
    "suffix": ["bytes=-100000"],
    "small pieces": [f"bytes={a}-{a + 999}" for a in range(1000, 16000, 1000)],
    "backwards suffixes": ["bytes=-500", "bytes=-1000", "bytes=-16000"],
}


async def test_every_range_sequence_is_audited_once_per_window(bench: Bench, http: aiohttp.ClientSession) -> None:
    for n, (label, headers) in enumerate(RANGE_SEQUENCES.items()):
        cid = await new_call(bench, n)
        for header in headers:
            st, _, _ = await call(http, bench, "GET", f"/api/v1/calls/{cid}/audio", "agent",
                                  headers={"Range": header})
            assert st == 206, (label, header)
        rows = await audit_rows(bench, call_id=uuid.UUID(cid))
        assert [(r["actor"], r["action"]) for r in rows] == [("agent1(token:agent-token)", "listen")], label
        assert json.loads(rows[0]["details"])["range"] == headers[0], label
        # A download of the same call is its own entry, also from the middle of the file.
        st, _, _ = await call(http, bench, "GET", f"/api/v1/calls/{cid}/audio?download=1", "agent",
                              headers={"Range": "bytes=2-"})
        assert st == 206
        assert [r["action"] for r in await audit_rows(bench, call_id=uuid.UUID(cid))] == ["listen", "download"]
    # Another principal reading the same call gets its own entry.
    cid = await new_call(bench, 50)
    for role in ("agent", "supervisor"):
        assert (await call(http, bench, "GET", f"/api/v1/calls/{cid}/audio", role,
                           headers={"Range": "bytes=44-"}))[0] == 206
    assert sorted(r["role"] for r in await audit_rows(bench, call_id=uuid.UUID(cid))) == ["agent", "supervisor"]


async def test_concurrent_ranges_write_one_row(bench: Bench, http: aiohttp.ClientSession) -> None:
    cid = await new_call(bench, 60)
    results = await asyncio.gather(*(
        call(http, bench, "GET", f"/api/v1/calls/{cid}/audio", "supervisor",
             headers={"Range": f"bytes={44 + 100 * i}-{143 + 100 * i}"}) for i in range(30)))
    assert [r[0] for r in results] == [206] * 30
    rows = await audit_rows(bench, call_id=uuid.UUID(cid))
    assert [(r["role"], r["action"]) for r in rows] == [("supervisor", "listen")]


async def test_a_new_window_audits_again(bench: Bench, http: aiohttp.ClientSession,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cid = await new_call(bench, 70)
    monkeypatch.setattr(routes_calls, "AUDIO_AUDIT_WINDOW_S", 0)  # every request opens a new window
    for header in ("bytes=1-", "bytes=44-99", "bytes=-10"):
        assert (await call(http, bench, "GET", f"/api/v1/calls/{cid}/audio", "agent",
                           headers={"Range": header}))[0] == 206
    rows = await audit_rows(bench, call_id=uuid.UUID(cid))
    assert [json.loads(r["details"])["range"] for r in rows] == ["bytes=1-", "bytes=44-99", "bytes=-10"]


# --- 2. a recording path that is a symlink is refused for reading ---------------------------------

async def test_a_symlinked_recording_is_refused_and_verify_reports_it(bench: Bench, http: aiohttp.ClientSession,
                                                                      tmp_path: Path) -> None:
    held = await new_call(bench, 80)  # another agent's call, on legal hold
    await bench.pool.execute("UPDATE calls SET agent = '299', legal_hold = true, legal_hold_reason = 'case 7' "
                             "WHERE id = $1", uuid.UUID(held))
    mine = await new_call(bench, 81)  # the agent's own call, whose file is a link to the held one
    rel_held, rel_mine = [await bench.pool.fetchval("SELECT recording_path FROM calls WHERE id = $1", uuid.UUID(c))
                          for c in (held, mine)]
    held_bytes = (bench.rec_dir / rel_held).read_bytes()
    (bench.rec_dir / rel_mine).unlink()
    (bench.rec_dir / rel_mine).symlink_to(bench.rec_dir / rel_held)
    await bench.pool.execute("UPDATE calls SET recording_sha256 = $2, recording_bytes = $3 WHERE id = $1",
                             uuid.UUID(mine), hashlib.sha256(held_bytes).hexdigest(), len(held_bytes))
    for headers in ({}, {"Range": "bytes=0-"}, {"Range": "bytes=44-"}):
        st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{mine}/audio", "agent", headers=headers)
        assert st == 409 and json.loads(body) == {"error": "the recording file is a symbolic link; refused"}
        assert held_bytes[44:100] not in body
    assert (await call(http, bench, "GET", f"/api/v1/calls/{held}/audio", "agent"))[0] == 404  # not the agent's
    # Nothing was read, so nothing was audited as a listen.
    assert not [r for r in await audit_rows(bench, action="listen")]
    cfg = write_config(tmp_path / "c.toml", bench.dsn, bench.rec_dir)
    res = run_cli(cfg, "verify", "--json")
    assert res.returncode == 3, res.stderr
    report = json.loads(res.stdout)
    assert [item["id"] for item in report["symlinked"]] == [mine]
    assert mine not in {item["id"] for kind in ("missing", "changed", "unreadable") for item in report[kind]}
    res = run_cli(cfg, "verify")
    assert res.returncode == 3 and f"SYMLINK   {mine}" in res.stdout and "1 symlinked" in res.stdout
    assert (bench.rec_dir / rel_held).read_bytes() == held_bytes


# --- 3. auditors see no audit entries of calls hidden from them -----------------------------------

async def test_auditor_sees_no_entries_of_a_confidential_call(bench: Bench, http: aiohttp.ClientSession,
                                                              tmp_path: Path) -> None:
    secret, plain = bench.calls["confidential"], bench.calls["other"]
    for cid in (secret, plain):
        st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{cid}/tags", "admin",
                              json={"tag": f"tag-text-{cid[:8]}"})
        assert st == 201
        st, body, _ = await call(http, bench, "PUT", f"/api/v1/calls/{cid}/legal-hold", "admin",
                                 json={"legal_hold": True, "reason": f"hold-reason-{cid[:8]}"})
        assert st == 200, body
    assert (await call(http, bench, "GET", f"/api/v1/calls/{secret}", "auditor"))[0] == 404  # hidden

    async def trail(role: str, query: str = "") -> tuple[set[str | None], bytes]:
        st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?limit=500{query}", role)
        assert st == 200
        return {item["call_id"] for item in json.loads(body)["items"]}, body

    ids, body = await trail("auditor")
    assert plain in ids and secret not in ids
    assert f"hold-reason-{plain[:8]}".encode() in body and f"tag-text-{plain[:8]}".encode() in body
    assert f"hold-reason-{secret[:8]}".encode() not in body and f"tag-text-{secret[:8]}".encode() not in body
    assert None in ids  # entries without a call (log-ins, users) stay
    for query in (f"&call_id={secret}", "&action=legal_hold", "&action=tag_add", "&actor=admin1(token:admin-token)"):
        ids, body = await trail("auditor", query)
        assert secret not in ids and secret[:8].encode() not in body, query
    assert (await trail("auditor", f"&call_id={plain}"))[0] == {plain}
    # An admin sees both, as does the operator at the CLI (who has the database anyway).
    assert {secret, plain} <= (await trail("admin"))[0]
    cfg = write_config(tmp_path / "c.toml", bench.dsn, bench.rec_dir)
    res = run_cli(cfg, "audit", "--call-id", secret, "--format", "json")
    assert res.returncode == 0 and f"hold-reason-{secret[:8]}" in res.stdout


# --- 4. throttled log-ins are audited aggregated ---------------------------------------------------

async def test_throttled_logins_write_a_handful_of_rows_with_the_right_count(bench: Bench,
                                                                           http: aiohttp.ClientSession) -> None:
    for _ in range(5):
        st, _, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": "guess"})
        assert st == 401
    results = await asyncio.gather(*(
        call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": f"guess{i}"})
        for i in range(200)))
    assert [r[0] for r in results] == [429] * 200

    def throttled(rows: list[asyncpg.Record]) -> list[dict[str, object]]:
        return [d for d in (json.loads(r["details"]) for r in rows) if d["reason"] == "throttled"]

    # While the window is open: one entry, at the first throttled attempt.
    live = throttled(await audit_rows(bench, action="login_failed"))
    assert [(d["key"], d["count"]) for d in live] == [("user:admin1@127.0.0.1", 1)]
    # The window closes (here: at shutdown, which writes every open window): one entry with the rest.
    await bench.server.stop()
    rows = await audit_rows(bench, action="login_failed")
    done = throttled(rows)
    assert len(done) == 2 and sum(int(d["count"]) for d in done) == 200  # type: ignore[call-overload]
    assert done[1]["users"] == ["admin1"] and done[1]["users_distinct"] == 1
    assert len(rows) == 7  # 5 wrong passwords + 2 for 200 throttled attempts


# --- 9. log-in throttling: per user and address, growing delays, trusted proxies ------------------

async def _login(http: aiohttp.ClientSession, base: str, user: str, password: str,
                 forwarded: str | None = None) -> aiohttp.ClientResponse:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with http.post(base + "/api/v1/login", json={"username": user, "password": password},
                         headers=headers) as resp:
        await resp.read()
        return resp


async def _proxied(bench: Bench, *trusted: str) -> HttpServer:
    server = HttpServer(dataclasses.replace(bench.settings, http=dataclasses.replace(
        bench.settings.http, trusted_proxies=trusted)), bench.pool)
    await server.start()
    return server


async def test_bad_passwords_from_one_address_do_not_lock_the_user_out_elsewhere(
        bench: Bench, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10 item 9: behind a trusted proxy (here 127.0.0.1), a guesser at X slows down admin1
    at X only; admin1 logs in from Y, and the delays grow (30 s, 60 s, ...) instead of a lock."""
    server = await _proxied(bench, "127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    try:
        for _ in range(5):
            assert (await _login(http, base, "admin1", "guess", "203.0.113.7")).status == 401
        first = await _login(http, base, "admin1", PASSWORD, "203.0.113.7")
        assert first.status == 429 and 25 <= int(first.headers["Retry-After"]) <= 30
        # The same user from another address is not held up.
        assert (await _login(http, base, "admin1", PASSWORD, "198.51.100.20")).status == 200
        assert any(r.getMessage().startswith("198.51.100.20 POST /api/v1/login 200")
                   for r in caplog.records if r.name == "callrec.http")  # the access log too
        # The audit names the client's address (the forwarded one), not the proxy's.
        rows = await audit_rows(bench, action="login")
        assert [r["remote"] for r in rows] == ["198.51.100.20"]
        failed = await audit_rows(bench, action="login_failed")
        assert {r["remote"] for r in failed} == {"203.0.113.7"}
        assert json.loads(failed[-1]["details"])["key"] == "user:admin1@203.0.113.7"
        # The next failure after the delay doubles it (the throttle's clock moved on 30 s).
        assert server.runner is not None
        throttle = server.runner.app[routes_auth.THROTTLE]
        clock = throttle.clock
        throttle.clock = lambda: clock() + 31
        assert (await _login(http, base, "admin1", "guess", "203.0.113.7")).status == 401
        again = await _login(http, base, "admin1", PASSWORD, "203.0.113.7")
        assert again.status == 429 and 55 <= int(again.headers["Retry-After"]) <= 60
    finally:
        await server.stop()


async def test_an_address_behind_a_trusted_proxy_is_throttled_by_its_forwarded_address(
        bench: Bench, http: aiohttp.ClientSession) -> None:
    """Many user names from one forwarded address hit the per-address limit (50); everyone else
    behind the same proxy still logs in."""
    server = await _proxied(bench, "127.0.0.0/8", "10.0.0.0/8")
    base = f"http://127.0.0.1:{server.port}"
    attacker = "192.0.2.66, 10.1.2.3"  # the client, then a trusted inner proxy
    try:
        statuses = [(await _login(http, base, f"nobody{i}", "guess", attacker)).status for i in range(50)]
        assert statuses == [401] * 50
        blocked = await _login(http, base, "agent1", PASSWORD, attacker)
        assert blocked.status == 429
        assert (await _login(http, base, "agent1", PASSWORD, "192.0.2.67")).status == 200
        # A forged entry left of the real client is not believed: still the attacker's address.
        assert (await _login(http, base, "agent1", PASSWORD, "192.0.2.67, 192.0.2.66")).status == 429
        throttled = [json.loads(r["details"]) for r in await audit_rows(bench, action="login_failed")]
        assert throttled[-1]["key"] == "remote:192.0.2.66"
    finally:
        await server.stop()


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(bench: Bench, http: aiohttp.ClientSession) -> None:
    """No trusted proxies (the default): the header cannot pick a fresh address per attempt."""
    for i in range(5):
        st, _, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": "guess"},
                              headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert st == 401
    st, _, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": PASSWORD},
                          headers={"X-Forwarded-For": "198.51.100.99"})
    assert st == 429
    assert {r["remote"] for r in await audit_rows(bench, action="login_failed")} == {"127.0.0.1"}


# --- 5. no secret reaches the log through an oversized header --------------------------------------

async def _raw_request(bench: Bench, head: bytes) -> bytes:
    """One request over a plain socket (a client library would refuse to send these headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bench.server.port)
    try:
        writer.write(head)
        await writer.drain()
        return await reader.read(65536)
    finally:
        writer.close()


async def test_oversized_headers_put_no_secret_in_the_log(bench: Bench, http: aiohttp.ClientSession,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    st, _, resp = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": PASSWORD})
    assert st == 200
    session = resp.cookies["callrec_session"].value
    token = bench.tokens["admin"]
    secrets = [session, token]
    pad = "x" * 20000
    heads = [
        f"Cookie: callrec_session={session}; pad={pad}",
        f"Authorization: Bearer {token}{pad}",
        f"Authorization: Bearer {token} {pad}",
        f"X-Other: {pad}\r\nAuthorization: Bearer {token}",
        f"Cookie: a=b\r\n {pad}callrec_session={session}",  # an obsolete folded line
        f"X-Api-Token: {token}{pad}",
        f"X-Forwarded-For: {session}{pad}",  # anything shaped like one of our secrets
    ]
    for line in heads:
        raw = f"GET /api/v1/me HTTP/1.1\r\nHost: 127.0.0.1\r\n{line}\r\n\r\n".encode()
        answer = await _raw_request(bench, raw)
        assert answer.split(b" ", 2)[1] == b"400", answer[:100]
    # A long request line (the path), and a secret in a path of normal length (the access log).
    answer = await _raw_request(bench, f"GET /api/v1/{token}{pad} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.split(b" ", 2)[1] == b"400"
    for path in (f"/api/v1/{token}", f"/api/v1/calls/{session}", f"/console/x{token}y"):
        assert (await call(http, bench, "GET", path, "agent"))[0] in (401, 404)
    caplog.handler.flush()
    text = caplog.text + "\n".join(f"{r.getMessage()} {r.exc_text} {r.exc_info}" for r in caplog.records)
    for secret in secrets:
        for i in range(0, len(secret) - 8, 4):
            assert secret[i:i + 8] not in text, f"a part of a secret reached the log: {secret[i:i + 8]!r}"
    errors = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= logging.ERROR]
    assert len(errors) >= len(heads) + 1  # aiohttp did log each of them, without the bytes
    assert all("the request's bytes are not logged" in r.getMessage() for r in errors)
    assert "[redacted]" in text


# --- 6. the small ones -----------------------------------------------------------------------------

async def test_a_deeply_nested_cursor_is_a_400(bench: Bench, http: aiohttp.ClientSession) -> None:
    for depth in (3000, 5000):
        cursor = base64.urlsafe_b64encode(b"[" * depth).decode().rstrip("=")
        if len(cursor) > 6000:
            continue  # longer than aiohttp's request line (its own 400)
        st, body, _ = await call(http, bench, "GET", f"/api/v1/calls?cursor={cursor}", "admin")
        assert st == 400 and json.loads(body) == {"error": "cursor: not a cursor this API returned"}
    cursor = base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).decode().rstrip("=")
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls?cursor={cursor}", "admin")
    assert st == 400


async def test_export_and_evidence_are_no_store_and_nosniff(bench: Bench, http: aiohttp.ClientSession,
                                                             tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    generate_key(key)
    signing = HttpServer(dataclasses.replace(bench.settings, integrity=IntegritySettings(signing_key=str(key))),
                         bench.pool)
    await signing.start()
    try:
        for base, path in ((bench.base, "/api/v1/calls/export?format=csv"),
                           (bench.base, "/api/v1/calls/export?format=json"),
                           (f"http://127.0.0.1:{signing.port}", "/api/v1/calls/export/evidence?number=%2B4930111")):
            async with http.get(base + path, headers=bench.auth("admin")) as resp:
                body = await resp.read()
                assert resp.status == 200, (path, body[:200])
                assert resp.headers.get("Cache-Control") == "no-store", path
                assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
                assert resp.headers["Content-Disposition"].startswith("attachment"), path
    finally:
        await signing.stop()


async def test_pause_503_shows_no_ami_details(bench: Bench, http: aiohttp.ClientSession,
                                              caplog: pytest.LogCaptureFixture) -> None:
    live = await new_call(bench, 90)
    await bench.pool.execute("UPDATE calls SET recording_status = 'recording', finalized_at = NULL, ended_at = NULL, "
                             "state = 'recording' WHERE id = $1", uuid.UUID(live))
    for what in ("pause", "resume"):
        st, body, _ = await call(http, bench, "POST", f"/api/v1/calls/{live}/{what}", "supervisor")
        if what == "resume":
            assert st == 409  # not paused: answered before AMI is asked
            continue
        assert st == 503 and json.loads(body) == {"error": "recording control unavailable"}
        assert b"127.0.0.1" not in body and b":9" not in body and b"AMI" not in body
    # The operator finds the reason in the log.
    assert any("pause through the API failed" in r.getMessage() for r in caplog.records)
