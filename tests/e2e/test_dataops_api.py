"""HTTP routes of data ops: legal hold, retention status, evidence export; every role, real server and DB."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.dataops_helpers import add_call, audit_rows
from support.opsapi import PASSWORD, api_settings

from callrec.access import ROLES
from callrec.config.dataops import IntegritySettings, RetentionSettings
from callrec.dataops.deletion import delete_audio
from callrec.dataops.evidence import generate_key, load_public_key, verify_manifest
from callrec.store import users
from callrec.web.server import HttpServer

AGENT_EXT = "201"


@dataclasses.dataclass
class DataBench:
    base: str
    pool: asyncpg.Pool
    rec: Path
    public_key: Path
    tokens: dict[str, str]
    calls: dict[str, dict]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
async def bench(database: str, tmp_path: Path) -> AsyncIterator[DataBench]:
    rec = tmp_path / "recordings"
    rec.mkdir()
    key = tmp_path / "signing.pem"
    pub, _ = generate_key(key)
    settings = dataclasses.replace(api_settings(database, rec), integrity=IntegritySettings(signing_key=str(key)),
                                   retention=RetentionSettings(audio_days=30))
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    tokens = {}
    calls = {}
    async with pool.acquire() as conn:
        for role in ROLES:
            await users.add_user(conn, f"{role}1", role, PASSWORD, AGENT_EXT if role == "agent" else None)
            _, tokens[role] = await users.create_token(conn, f"{role}-token", user=f"{role}1")
        calls["mine"] = await add_call(conn, rec, caller="+4930111")  # agent 201 (the helper's agent)
        calls["other"] = await add_call(conn, rec, caller="+4930222", age_days=40)
        await conn.execute("UPDATE calls SET agent = '202' WHERE id = $1", calls["other"]["id"])
        calls["secret"] = await add_call(conn, rec, caller="+4930333")
        await conn.execute("UPDATE calls SET confidential = true WHERE id = $1", calls["secret"]["id"])
    server = HttpServer(settings, pool)
    await server.start()
    try:
        yield DataBench(f"http://127.0.0.1:{server.port}", pool, rec, pub, tokens, calls)
    finally:
        await server.stop()
        await pool.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def request(http: aiohttp.ClientSession, bench: DataBench, method: str, path: str, role: str,
                  **kw: object) -> tuple[int, bytes, dict]:
    async with http.request(method, bench.base + path, headers=bench.auth(role), **kw) as resp:  # type: ignore
        return resp.status, await resp.read(), dict(resp.headers)


# Which roles may set a hold, and which calls each role sees.
HOLD_ROLES = {"admin", "security"}


def sees(role: str, label: str) -> bool:
    if role in ("admin", "security"):
        return True
    if label == "secret":
        return False
    if role == "agent":
        return label == "mine"
    return True


@pytest.mark.parametrize("role", ROLES)
async def test_legal_hold_route_every_role(bench: DataBench, http: aiohttp.ClientSession, role: str) -> None:
    for label, c in bench.calls.items():
        status, body, _ = await request(http, bench, "PUT", f"/api/v1/calls/{c['id']}/legal-hold", role,
                                        json={"legal_hold": True, "reason": "case 1"})
        if role not in HOLD_ROLES:
            assert status == 403, (role, label, body)
        elif not sees(role, label):
            assert status == 404
        else:
            assert status == 200, body
            doc = json.loads(body)
            assert doc["legal_hold"] is True and doc["legal_hold_by"] == f"{role}1(token:{role}-token)"
            assert doc["legal_hold_reason"] == "case 1"
    held = {str(r["id"]) for r in await bench.pool.fetch("SELECT id FROM calls WHERE legal_hold")}
    expected = {c["id"] for label, c in bench.calls.items() if role in HOLD_ROLES and sees(role, label)}
    assert held == expected
    async with bench.pool.acquire() as conn:
        assert len(await audit_rows(conn, action="legal_hold")) == len(expected)


async def test_legal_hold_blocks_the_api_delete_and_is_released(bench: DataBench, http: aiohttp.ClientSession) -> None:
    c = bench.calls["mine"]
    url = f"/api/v1/calls/{c['id']}"
    for bad in ({"legal_hold": "yes"}, {"legal_hold": True}, {"legal_hold": True, "reason": "   "},
                {"legal_hold": True, "reason": "x" * 501}, {"legal_hold": False, "reason": 5}):
        status, body, _ = await request(http, bench, "PUT", url + "/legal-hold", "admin", json=bad)
        assert status == 400 and "error" in json.loads(body), bad
    status, _, _ = await request(http, bench, "PUT", "/api/v1/calls/not-a-uuid/legal-hold", "admin",
                                 json={"legal_hold": False})
    assert status == 404
    status, _, _ = await request(http, bench, "PUT", url + "/legal-hold", "security",
                                 json={"legal_hold": True, "reason": "subpoena 42"})
    assert status == 200
    status, body, _ = await request(http, bench, "GET", url, "admin")
    assert json.loads(body)["legal_hold"] is True
    status, body, _ = await request(http, bench, "DELETE", url + "/audio", "admin")
    assert status == 409 and "legal hold" in json.loads(body)["error"]
    assert c["path"].exists()
    status, body, _ = await request(http, bench, "PUT", url + "/legal-hold", "admin",
                                    json={"legal_hold": False, "reason": "closed"})
    assert status == 200 and json.loads(body)["legal_hold"] is False
    status, _, _ = await request(http, bench, "DELETE", url + "/audio", "admin")
    assert status == 200 and not c["path"].exists()
    assert await bench.pool.fetchval("SELECT audio_deleted_reason FROM calls WHERE id = $1", c["id"]) == "manual"
    async with bench.pool.acquire() as conn:
        actions = [e["action"] for e in await audit_rows(conn, c["id"])]
    assert actions[:1] == ["legal_hold"] and "legal_hold_release" in actions and actions[-1] == "delete_audio"


@pytest.mark.parametrize("role", ROLES)
async def test_retention_status(bench: DataBench, http: aiohttp.ClientSession, role: str) -> None:
    status, body, _ = await request(http, bench, "GET", "/api/v1/retention", role)
    if role not in ("admin", "security", "auditor"):
        assert status == 403
        return
    assert status == 200
    doc = json.loads(body)
    assert (doc["audio_days"], doc["audio_due"], doc["legal_holds"], doc["last_run"]) == (30, 1, 0, None)


@pytest.mark.parametrize("role", ROLES)
async def test_evidence_export_every_role(bench: DataBench, http: aiohttp.ClientSession, role: str) -> None:
    status, body, headers = await request(http, bench, "GET", "/api/v1/calls/export/evidence", role)
    if role == "auditor":  # no audio for the auditor
        assert status == 403
        return
    assert status == 200, body
    assert headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    got = {c["id"] for c in manifest["calls"]}
    assert got == {c["id"] for label, c in bench.calls.items() if sees(role, label)}
    assert manifest["created_by"] == f"{role}1(token:{role}-token)"
    target = Path(bench.rec.parent / f"{role}.zip")
    target.write_bytes(body)
    check = verify_manifest(target, load_public_key(bench.public_key.read_bytes()))
    assert check.ok, check.problems
    assert check.files_ok == len(got)
    async with bench.pool.acquire() as conn:
        assert len(await audit_rows(conn, action="evidence_export")) == len(got)


async def test_evidence_export_filters_limits_and_deleted_audio(bench: DataBench, http: aiohttp.ClientSession,
                                                                tmp_path: Path) -> None:
    other = bench.calls["other"]
    async with bench.pool.acquire() as conn:
        assert (await delete_audio(conn, other["id"], bench.rec, actor="admin1")).result == "deleted"
    status, body, _ = await request(http, bench, "GET", "/api/v1/calls/export/evidence?number=%2B4930222", "admin")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert not [n for n in zf.namelist() if n.startswith("audio/")]
    [doc] = manifest["calls"]
    assert doc["file"] is None and "audio deleted" in doc["file_note"]
    for query in ("limit=501", "limit=0", "cursor=abc", "nonsense=1", "from=yesterday", "call=abc"):
        status, body, _ = await request(http, bench, "GET", f"/api/v1/calls/export/evidence?{query}", "admin")
        assert status == 400 and "error" in json.loads(body), query


@pytest.mark.parametrize("role", ["admin", "agent", "supervisor"])
async def test_evidence_export_of_chosen_calls_and_of_a_page(bench: DataBench, http: aiohttp.ClientSession,
                                                             role: str) -> None:
    """call=<id> (repeatable): those calls only, still under the visibility rule; cursor: the same page as the
    call list's."""
    c = bench.calls
    chosen = [c["mine"]["id"], c["secret"]["id"]]
    status, body, _ = await request(http, bench, "GET", "/api/v1/calls/export/evidence?"
                                    + "&".join(f"call={i}" for i in chosen), role)
    assert status == 200, body
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        got = {d["id"] for d in json.loads(zf.read("manifest.json"))["calls"]}
    assert got == {str(c[label]["id"]) for label in ("mine", "secret") if sees(role, label)}
    # Page 2 of a one-call-a-page search: the zip holds the very call the list shows there.
    status, body, _ = await request(http, bench, "GET", "/api/v1/calls?limit=1", role)
    listed = json.loads(body)
    if not listed["next_cursor"]:
        return
    status, body, _ = await request(http, bench, "GET", f"/api/v1/calls?limit=1&cursor={listed['next_cursor']}", role)
    [second] = json.loads(body)["items"]
    status, body, _ = await request(http, bench, "GET", "/api/v1/calls/export/evidence?limit=1&cursor="
                                    + listed["next_cursor"], role)
    assert status == 200, body
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert [d["id"] for d in json.loads(zf.read("manifest.json"))["calls"]] == [second["id"]]
