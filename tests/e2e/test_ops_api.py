"""The ops API against a real PostgreSQL: authorization matrix, recordings (Range, traversal),
export, tags/confidential/delete, the audit trail, sessions + CSRF, and no secrets in the logs."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.opsapi import PASSWORD, T0, Bench, audit_rows, call, insert_call, visible

from callrec.access import ROLES
from callrec.web.app import make_app

TAG_ROLES = {"admin", "supervisor", "security"}
CONFIDENTIAL_ROLES = {"admin", "security"}
PAUSE_ROLES = {"admin", "supervisor", "agent"}
AUDIT_ROLES = {"admin", "auditor"}
SEARCH_ROLES = {"admin", "supervisor", "agent", "security"}
T_LATE = T0 + timedelta(hours=5)


def ids_of(body: bytes) -> set[str]:
    return {item["id"] for item in json.loads(body)["items"]}


async def test_authorization_matrix(bench: Bench, http: aiohttp.ClientSession,
                                    caplog: pytest.LogCaptureFixture) -> None:
    c = bench.calls
    everything = set(c.values())
    for role in ROLES:
        sees = visible(role, bench)
        st, body, _ = await call(http, bench, "GET", "/api/v1/me", role)
        assert st == 200 and json.loads(body)["role"] == role
        # Search, count, export: exactly the visible calls (or 403 for a role that may not list).
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls?limit=500", role)
        if role in SEARCH_ROLES:
            assert st == 200 and ids_of(body) == sees, role
            st, body, _ = await call(http, bench, "GET", "/api/v1/calls/count", role)
            assert st == 200 and json.loads(body)["count"] == len(sees), role
            st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=json", role)
            assert st == 200 and {r["id"] for r in json.loads(body)} == sees, role
            st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=csv", role)
            assert st == 200 and {r["id"] for r in csv.DictReader(io.StringIO(body.decode()))} == sees, role
            # A filter cannot widen visibility: the hidden call's own number finds nothing.
            st, body, _ = await call(http, bench, "GET", "/api/v1/calls?number=%2B4930444", role)
            assert ids_of(body) == ({c["confidential"]} & sees), role
        else:
            assert st == 403, role
            for path in ("/api/v1/calls/count", "/api/v1/calls/export?format=csv"):
                assert (await call(http, bench, "GET", path, role))[0] == 403, (role, path)
        for label, call_id in c.items():
            hidden = call_id not in sees
            st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}", role)
            assert st == (404 if hidden else 200), (role, label)
            if not hidden:
                assert json.loads(body)["id"] == call_id
            st, body, resp = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/audio", role)
            if role == "auditor":
                assert st == 403
            elif hidden or label in ("unrecorded", "deleted"):
                assert st == 404, (role, label)
                assert resp.content_type == "application/json"
            else:
                assert st == 200 and body[:4] == b"RIFF" and resp.content_type == "audio/wav", (role, label)
            want = 403 if role not in TAG_ROLES else (404 if hidden else 201)
            st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{call_id}/tags", role, json={"tag": "qa"})
            assert st == want, (role, label, "tag")
            want = 403 if role not in TAG_ROLES else (404 if hidden else 200)
            st, _, _ = await call(http, bench, "DELETE", f"/api/v1/calls/{call_id}/tags/qa", role)
            assert st == want, (role, label, "untag")
            current = label == "confidential"
            want = 403 if role not in CONFIDENTIAL_ROLES else (404 if hidden else 200)
            st, _, _ = await call(http, bench, "PUT", f"/api/v1/calls/{call_id}/confidential", role,
                                  json={"confidential": current})
            assert st == want, (role, label, "confidential")
            # None of the bench's calls is being recorded now: 409 for a role that may pause a call it sees.
            want = 403 if role not in PAUSE_ROLES else (404 if hidden else 409)
            for action in ("pause", "resume"):
                st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{call_id}/{action}", role)
                assert st == want, (role, label, action)
            if role not in CONFIDENTIAL_ROLES:
                st, _, _ = await call(http, bench, "DELETE", f"/api/v1/calls/{call_id}/audio", role)
                assert st == 403, (role, label, "delete audio")
        # Id guessing: an unknown id, a non-id, and an encoded path all look like any hidden call.
        for bogus in (str(uuid.uuid4()), "1", "..%2F..%2Fetc%2Fpasswd", "%2e%2e"):
            for suffix in ("", "/audio"):
                st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{bogus}{suffix}", role)
                # (the auditor may not fetch audio at all: 403 before any lookup, or 404 off the route)
                assert st in ((403, 404) if role == "auditor" and suffix else (404,)), (role, bogus, suffix)
        st, _, _ = await call(http, bench, "GET", "/api/v1/audit", role)
        assert st == (200 if role in AUDIT_ROLES else 403), role
    # Every file is still there: nobody without the right deleted anything.
    assert everything == set(c.values())
    # Without credentials: 401 everywhere except the public routes.
    for method, path in (("GET", "/api/v1/calls"), ("GET", f"/api/v1/calls/{c['mine']}"),
                         ("GET", f"/api/v1/calls/{c['mine']}/audio"), ("GET", "/api/v1/audit"),
                         ("GET", "/api/v1/me"), ("POST", f"/api/v1/calls/{c['mine']}/tags"),
                         ("GET", "/api/v1/calls/export")):
        assert (await call(http, bench, method, bench_path := path))[0] == 401, bench_path
    bad = {"Authorization": "Bearer crt_not-a-real-token"}
    assert (await call(http, bench, "GET", "/api/v1/calls", headers=bad))[0] == 401
    assert (await call(http, bench, "GET", "/api/v1/calls", headers={"Authorization": "Basic eDp5"}))[0] == 401
    # A token in the URL is refused outright (and so never logged as a valid credential).
    st, _, _ = await call(http, bench, "GET", f"/api/v1/calls?token={bench.tokens['admin']}")
    assert st == 400
    assert (await call(http, bench, "GET", "/healthz"))[0] == 200
    assert (await call(http, bench, "GET", "/api/v1/openapi.json"))[0] == 200
    _assert_no_secrets(caplog, bench)


def _assert_no_secrets(caplog: pytest.LogCaptureFixture, bench: Bench) -> None:
    text = caplog.text
    assert " /api/v1/" in text  # the access log was captured
    for secret in [*bench.tokens.values(), PASSWORD]:
        assert secret not in text
        assert secret[4:20] not in text


async def test_revoked_expired_and_disabled_credentials(bench: Bench, http: aiohttp.ClientSession) -> None:
    await bench.pool.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'supervisor-token'")
    assert (await call(http, bench, "GET", "/api/v1/me", "supervisor"))[0] == 401
    await bench.pool.execute("UPDATE api_tokens SET expires_at = now() - interval '1 s' WHERE name = 'admin-token'")
    assert (await call(http, bench, "GET", "/api/v1/me", "admin"))[0] == 401
    await bench.pool.execute("UPDATE users SET disabled = true WHERE name = 'security1'")
    assert (await call(http, bench, "GET", "/api/v1/me", "security"))[0] == 401
    st, _, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "security1", "password": PASSWORD})
    assert st == 401


async def test_session_login_csrf_logout(bench: Bench, http: aiohttp.ClientSession,
                                         caplog: pytest.LogCaptureFixture) -> None:
    st, body, resp = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": "nope"})
    assert st == 401
    st, body, resp = await call(http, bench, "POST", "/api/v1/login",
                                json={"username": "nobody", "password": PASSWORD})
    assert st == 401
    st, body, resp = await call(http, bench, "POST", "/api/v1/login",
                                json={"username": "supervisor1", "password": PASSWORD})
    assert st == 200
    login = json.loads(body)
    assert login["role"] == "supervisor" and login["csrf_token"]
    cookie = resp.headers["Set-Cookie"]
    assert "callrec_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    st, body, _ = await call(http, bench, "GET", "/api/v1/me")
    assert st == 200 and json.loads(body)["user"] == "supervisor1"
    mine = bench.calls["mine"]
    # A mutating request on the cookie alone (what a cross-site form would send) is refused.
    st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{mine}/tags", json={"tag": "x"})
    assert st == 403
    st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{mine}/tags", json={"tag": "x"},
                          headers={"X-CSRF-Token": "wrong"})
    assert st == 403
    st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{mine}/tags", json={"tag": "x"},
                          headers={"X-CSRF-Token": login["csrf_token"]})
    assert st == 201
    assert (await call(http, bench, "POST", "/api/v1/logout", headers={"X-CSRF-Token": login["csrf_token"]}))[0] == 200
    assert (await call(http, bench, "GET", "/api/v1/me"))[0] == 401
    # An expired session is refused too.
    st, body, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "agent1", "password": PASSWORD})
    assert st == 200 and (await call(http, bench, "GET", "/api/v1/me"))[0] == 200
    await bench.pool.execute("UPDATE web_sessions SET expires_at = now() - interval '1 s'")
    assert (await call(http, bench, "GET", "/api/v1/me"))[0] == 401
    # Log-in needs a JSON body.
    st, _, _ = await call(http, bench, "POST", "/api/v1/login", data="username=a&password=b",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 415
    actions = [(r["actor"], r["action"]) for r in await audit_rows(bench)
               if r["action"] in ("login", "login_failed", "logout")]
    assert actions == [("admin1", "login_failed"), ("nobody", "login_failed"), ("supervisor1", "login"),
                       ("supervisor1", "logout"), ("agent1", "login")]
    assert login["csrf_token"] not in caplog.text
    _assert_no_secrets(caplog, bench)


async def test_audio_ranges(bench: Bench, http: aiohttp.ClientSession) -> None:
    mine = bench.calls["mine"]
    path = f"/api/v1/calls/{mine}/audio"
    whole = next(bench.rec_dir.rglob(f"{mine}.wav")).read_bytes()
    size = len(whole)
    st, body, resp = await call(http, bench, "GET", path, "supervisor")
    assert st == 200 and body == whole and resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Disposition"].startswith("inline")
    st, body, resp = await call(http, bench, "GET", path, "supervisor", headers={"Range": "bytes=0-99"})
    assert st == 206 and body == whole[:100] and resp.headers["Content-Range"] == f"bytes 0-99/{size}"
    st, body, resp = await call(http, bench, "GET", path, "supervisor", headers={"Range": "bytes=1000-"})
    assert st == 206 and body == whole[1000:] and resp.headers["Content-Range"] == f"bytes 1000-{size - 1}/{size}"
    st, body, resp = await call(http, bench, "GET", path, "supervisor", headers={"Range": "bytes=-50"})
    assert st == 206 and body == whole[-50:]
    st, body, resp = await call(http, bench, "GET", path, "supervisor", headers={"Range": f"bytes=10-{size * 2}"})
    assert st == 206 and body == whole[10:]
    st, body, resp = await call(http, bench, "GET", path, "supervisor", headers={"Range": f"bytes={size}-"})
    assert st == 416 and resp.headers["Content-Range"] == f"bytes */{size}"
    assert json.loads(body)["error"]
    st, body, _ = await call(http, bench, "GET", path, "supervisor", headers={"Range": "bytes=-0"})
    assert st == 416
    # Several ranges, or nonsense: the whole file (RFC 9110 lets a server ignore Range).
    for header in ("bytes=0-9,20-29", "bytes=abc", "lines=1-2", "bytes=9-3"):
        st, body, _ = await call(http, bench, "GET", path, "supervisor", headers={"Range": header})
        assert st == 200 and body == whole, header
    st, body, resp = await call(http, bench, "GET", path + "?download=1", "supervisor")
    assert st == 200 and body == whole and resp.headers["Content-Disposition"].startswith("attachment")
    # Audited: the first listen and the first download, whatever their Range; not every seek after it.
    rows = await audit_rows(bench, call_id=uuid.UUID(mine))
    kinds = [r["action"] for r in rows]
    assert kinds.count("download") == 1
    assert kinds.count("listen") == 1


async def test_recording_paths_never_leave_the_folder(bench: Bench, http: aiohttp.ClientSession,
                                                      tmp_path: Path) -> None:
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF-not-yours")
    async with bench.pool.acquire() as conn:
        ids = []
        for rel in ("../secret.wav", str(outside), "2026/11/../../../secret.wav", "link.wav"):
            call_id = await insert_call(conn, None, started=T_LATE, agent="9")
            await conn.execute("UPDATE calls SET recording_path = $2, recording_status = 'ready' WHERE id = $1",
                               uuid.UUID(call_id), rel)
            ids.append(call_id)
    (bench.rec_dir / "link.wav").symlink_to(outside)
    for call_id in ids:
        st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{call_id}/audio", "admin")
        assert st == 404 and b"not-yours" not in body
    st, _, _ = await call(http, bench, "GET", "/api/v1/calls/../../../etc/passwd", "admin")
    assert st == 404


async def test_mutations_and_their_audit(bench: Bench, http: aiohttp.ClientSession) -> None:
    c = bench.calls
    other = c["other"]
    st, body, _ = await call(http, bench, "POST", f"/api/v1/calls/{other}/tags", "supervisor",
                             json={"tag": "complaint"})
    assert st == 201 and json.loads(body) == {"tags": ["complaint"]}
    st, body, _ = await call(http, bench, "POST", f"/api/v1/calls/{other}/tags", "supervisor",
                             json={"tag": "complaint"})
    assert st == 200  # already there: nothing new, nothing audited
    for bad in ({"tag": ""}, {"tag": " x"}, {"tag": "a" * 65}, {"tag": "a\nb"}, {"tag": 5}, {}):
        assert (await call(http, bench, "POST", f"/api/v1/calls/{other}/tags", "supervisor", json=bad))[0] == 400
    for raw in (b"{", b"[" * 30000 + b"]" * 30000, b"\xff\xfe", b"null"):
        st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{other}/tags", "supervisor", data=raw,
                              headers={"Content-Type": "application/json"})
        assert st == 400, raw[:10]
    st, _, _ = await call(http, bench, "POST", f"/api/v1/calls/{other}/tags", "supervisor",
                          data=b'{"tag": "' + b"x" * 70000 + b'"}', headers={"Content-Type": "application/json"})
    assert st == 413
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls?tag=complaint", "supervisor")
    assert ids_of(body) == {other}
    # Confidential: the supervisor loses the call everywhere at once.
    st, _, _ = await call(http, bench, "PUT", f"/api/v1/calls/{other}/confidential", "security",
                          json={"confidential": True})
    assert st == 200
    assert (await call(http, bench, "GET", f"/api/v1/calls/{other}", "supervisor"))[0] == 404
    assert (await call(http, bench, "GET", f"/api/v1/calls/{other}/audio", "supervisor"))[0] == 404
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls?tag=complaint", "supervisor")
    assert ids_of(body) == set()
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/count?tag=complaint", "supervisor")
    assert json.loads(body)["count"] == 0
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{other}", "security")
    detail = json.loads(body)
    assert detail["confidential"] is True and detail["confidential_by"] == "security1(token:security-token)"
    # Delete the audio: file gone, row says who and when, audio is a 404, a second delete a 409.
    file = bench.rec_dir / (await bench.pool.fetchval("SELECT recording_path FROM calls WHERE id = $1",
                                                      uuid.UUID(other)))
    assert file.exists()
    st, body, _ = await call(http, bench, "DELETE", f"/api/v1/calls/{other}/audio", "security")
    assert st == 200 and not file.exists()
    st, body, _ = await call(http, bench, "GET", f"/api/v1/calls/{other}", "admin")
    rec = json.loads(body)["recording"]
    assert rec["deleted_by"] == "security1(token:security-token)" and rec["deleted_at"] and not rec["available"]
    assert rec["sha256"] == "ab" * 32  # what the file was stays on record
    assert (await call(http, bench, "GET", f"/api/v1/calls/{other}/audio", "admin"))[0] == 404
    assert (await call(http, bench, "DELETE", f"/api/v1/calls/{other}/audio", "admin"))[0] == 409
    assert (await call(http, bench, "DELETE", f"/api/v1/calls/{c['unrecorded']}/audio", "admin"))[0] == 409
    st, _, _ = await call(http, bench, "DELETE", f"/api/v1/calls/{other}/tags/complaint", "admin")
    assert st == 200
    assert (await call(http, bench, "DELETE", f"/api/v1/calls/{other}/tags/complaint", "admin"))[0] == 404
    st, _, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=csv&direction=inbound", "admin")
    assert st == 200
    rows = await audit_rows(bench, call_id=uuid.UUID(other))
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("supervisor1(token:supervisor-token)", "tag_add"),
        ("security1(token:security-token)", "confidential"),
        # The supervisor's two 404s on the call, now confidential, are denials (one entry per route).
        ("supervisor1(token:supervisor-token)", "access_denied"),
        ("supervisor1(token:supervisor-token)", "access_denied"),
        ("security1(token:security-token)", "view"),
        ("security1(token:security-token)", "delete_audio"),
        ("admin1(token:admin-token)", "view"),
        ("admin1(token:admin-token)", "tag_remove"),
    ]
    assert json.loads(rows[1]["details"]) == {"from": False, "to": True}
    export = (await audit_rows(bench, action="export"))[-1]
    assert json.loads(export["details"])["filter"]["direction"] == "inbound"
    assert export["role"] == "admin" and export["remote"] == "127.0.0.1"
    # The audit API shows them to an admin, filtered and paged; not to an auditor, from whom the
    # call is now hidden (its entries with it).
    st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?call_id={other}", "auditor")
    assert st == 200 and json.loads(body) == {"items": [], "next_cursor": None}
    st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?call_id={other}&limit=4", "admin")
    page = json.loads(body)
    assert st == 200 and [i["action"] for i in page["items"]] == ["tag_remove", "view", "delete_audio", "view"]
    st, body, _ = await call(http, bench, "GET", f"/api/v1/audit?call_id={other}&cursor={page['next_cursor']}",
                             "admin")
    assert [i["action"] for i in json.loads(body)["items"]] == ["access_denied", "access_denied", "confidential",
                                                                "tag_add"]
    assert json.loads(body)["next_cursor"] is None
    # The application's own connection cannot rewrite the trail.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await bench.pool.execute("UPDATE audit_log SET actor = 'someone else' WHERE call_id = $1", uuid.UUID(other))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await bench.pool.execute("DELETE FROM audit_log WHERE call_id = $1", uuid.UUID(other))
    assert len(await audit_rows(bench, call_id=uuid.UUID(other))) == 8


async def test_search_filters_and_keyset_pages(bench: Bench, http: aiohttp.ClientSession) -> None:
    c = bench.calls

    async def ids(query: str) -> set[str]:
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls?" + query, "admin")
        assert st == 200, (query, body)
        return ids_of(body)

    assert await ids("number=%2B4930*") == set(c.values())
    assert await ids("number=*222") == {c["other"]}
    assert await ids("number=%2B4930_22") == set()  # _ is literal, * is the only wildcard
    assert await ids("agent=202") == {c["other"], c["unrecorded"]}
    assert await ids("recorded=false") == {c["unrecorded"]}
    assert await ids("consent=declined") == {c["unrecorded"]}
    assert await ids("q=caro") == {c["other"]}
    assert await ids("q=bob") == {c["party"]}  # a party's name
    assert await ids("from=2026-11-20T09:02:00Z&to=2026-11-20T09:04:00Z") == {c["party"], c["confidential"]}
    assert await ids("min_duration=5.5&max_duration=6.5") == set(c.values())
    assert await ids("min_duration=7") == set()
    assert await ids("direction=outbound") == set()
    # Pages of 2, both orders, cover everything exactly once.
    for order in ("desc", "asc"):
        seen: list[str] = []
        cursor = None
        while True:
            q = f"limit=2&order={order}" + (f"&cursor={cursor}" if cursor else "")
            st, body, _ = await call(http, bench, "GET", "/api/v1/calls?" + q, "admin")
            page = json.loads(body)
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == len(c)
        starts = [next(k for k, v in c.items() if v == i) for i in seen]
        expected = ["mine", "other", "party", "confidential", "unrecorded", "deleted"]
        assert starts == (expected if order == "asc" else expected[::-1])
    for bad in ("from=9999-12-31T23:59:59-14:00", "to=0001-01-01T00:00:00%2B14:00", "max_duration=1e300",
                "limit=0", "limit=501", "limit=x", "from=yesterday", "direction=up", "consent=maybe",
                "recorded=perhaps", "min_duration=-1", "cursor=garbage", "order=sideways", "nonsense=1",
                "tag=", "number="):
        st, body, _ = await call(http, bench, "GET", "/api/v1/calls?" + bad, "admin")
        assert st == 400 and json.loads(body)["error"], bad
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls?limit=2", "admin")
    cursor = json.loads(body)["next_cursor"]
    assert (await call(http, bench, "GET", f"/api/v1/calls?order=asc&cursor={cursor}", "admin"))[0] == 400


async def test_export_csv_is_spreadsheet_safe(bench: Bench, http: aiohttp.ClientSession) -> None:
    async with bench.pool.acquire() as conn:
        evil = await insert_call(conn, None, started=T_LATE, agent="9", recorded=False,
                                 caller_name='=HYPERLINK("http://x")', caller="+49 30 1234")
    st, body, resp = await call(http, bench, "GET", "/api/v1/calls/export?format=csv&agent=9", "admin")
    assert st == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["id"] for r in rows] == [evil]
    assert rows[0]["caller_name"] == '\'=HYPERLINK("http://x")' and rows[0]["caller_number"] == "+49 30 1234"
    st, body, _ = await call(http, bench, "GET", "/api/v1/calls/export?format=xml", "admin")
    assert st == 400
    assert (await call(http, bench, "GET", "/api/v1/calls/export?limit=5", "admin"))[0] == 400


async def test_console_static_files_are_public_and_api_is_not(database: str, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from support.opsapi import api_settings

    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "app.js").write_text("console.log('hi')")
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        app = make_app(api_settings(database, tmp_path), pool)
        app.router.add_static("/console/", tmp_path / "static")
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/console/app.js")
            assert r.status == 200 and "console.log" in await r.text()
            assert (await client.get("/console/../api/v1/me")).status in (401, 404)
            assert (await client.get("/api/v1/me")).status == 401
            assert (await client.post("/console/app.js")).status in (401, 405)
    finally:
        await pool.close()


async def test_failed_logins_are_throttled(bench: Bench, http: aiohttp.ClientSession) -> None:
    for _ in range(5):
        st, _, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": "guess"})
        assert st == 401
    # Even the right password waits now: the guesser cannot tell when it hit.
    st, body, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "admin1", "password": PASSWORD})
    assert st == 429 and json.loads(body)["error"]
    # Another user from the same address still logs in (the per-address limit is higher).
    st, _, _ = await call(http, bench, "POST", "/api/v1/login", json={"username": "auditor1", "password": PASSWORD})
    assert st == 200
    reasons = [json.loads(r["details"])["reason"] for r in await audit_rows(bench, action="login_failed")]
    assert reasons == ["wrong password"] * 5 + ["throttled"]


# --- console-a: the dashboard and saved searches, role by role ---------------------------------------------------

async def test_dashboard_and_saved_searches_by_role(bench: Bench, http: aiohttp.ClientSession) -> None:
    window = "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&tz=Europe/Moscow"
    ids: dict[str, int] = {}
    for role in ROLES:
        st, body, _ = await call(http, bench, "GET", f"/api/v1/dashboard?{window}", role)
        if role not in SEARCH_ROLES:
            assert st == 403, role
            for method, path in (("GET", "/api/v1/saved-searches"), ("POST", "/api/v1/saved-searches"),
                                 ("DELETE", "/api/v1/saved-searches/1")):
                assert (await call(http, bench, method, path, role, json={}))[0] == 403, (role, method)
            continue
        d = json.loads(body)
        # The visibility rule: an agent counts their own calls, a supervisor no confidential one.
        assert st == 200 and d["total"] == len(visible(role, bench)), role
        assert sum(a["calls"] for a in d["agents"]) == d["total"], role
        assert d["days"] == [{"day": "2026-11-20", "total": d["total"], "recorded": d["recorded"],
                              "consent": d["consent"]}], role
        st, body, _ = await call(http, bench, "POST", "/api/v1/saved-searches", role,
                                 json={"name": "Refusals", "query": "consent=declined&agent=202"})
        assert st == 201, body
        ids[role] = json.loads(body)["id"]
        st, body, _ = await call(http, bench, "GET", "/api/v1/saved-searches", role)
        assert [s["id"] for s in json.loads(body)["items"]] == [ids[role]], role  # one's own only
    for role, own in ids.items():
        other = next(i for r, i in ids.items() if r != role)
        # Another user's saved search does not exist for this one.
        assert (await call(http, bench, "DELETE", f"/api/v1/saved-searches/{other}", role))[0] == 404
        assert (await call(http, bench, "PATCH", f"/api/v1/saved-searches/{other}", role,
                           json={"name": "x"}))[0] == 404
        st, body, _ = await call(http, bench, "PATCH", f"/api/v1/saved-searches/{own}", role, json={"name": "Renamed"})
        assert st == 200 and json.loads(body)["name"] == "Renamed"
        assert (await call(http, bench, "DELETE", f"/api/v1/saved-searches/{own}", role))[0] == 200
    assert [r["action"] for r in await audit_rows(bench, role="supervisor") if "saved" in r["action"]] == [
        "saved_search_add", "saved_search_update", "saved_search_delete"]
    # Bad input: a clear 400 naming the problem.
    for path, body_json, needle in (
            ("/api/v1/dashboard?tz=Nowhere/Else", None, "tz: unknown time zone"),
            ("/api/v1/dashboard?from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z", None, "from: must be before to"),
            ("/api/v1/saved-searches", {"name": "a", "query": "cursor=abc"}, "query: cursor: unknown parameter"),
            ("/api/v1/saved-searches", {"name": "a", "query": "min_duration=9&max_duration=3"},
             "min_duration: larger than max_duration"),
            ("/api/v1/saved-searches", {"name": " a", "query": ""}, "name: expected"),
            ("/api/v1/calls?min_duration=9&max_duration=3", None, "min_duration: larger than max_duration")):
        method = "GET" if body_json is None else "POST"
        st, body, _ = await call(http, bench, method, path, "admin", json=body_json)
        assert st == 400 and needle in json.loads(body)["error"], (path, body)
