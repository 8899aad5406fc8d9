"""Transcripts across the data lifecycle (issue 9, "Access and lifecycle"): a transcript is personal data
made from the recording, so every deletion path of the gate takes it with the audio, a legal hold keeps it
(and the database refuses to delete it), subject export carries it, `callrec verify` checks it was made
from the call's recording, and the signed evidence export includes it when asked.  Real PostgreSQL, real
files, the real HTTP server and CLI; synthetic transcripts stored with save_transcript."""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from support import REPO
from support.dataops_helpers import add_call, audit_rows, run_cli, settings_for, write_config
from support.opsapi import PASSWORD, api_settings
from support.settings import local_recordings, make_settings

from callrec.access import cli_principal
from callrec.dataops.deletion import set_legal_hold
from callrec.dataops.evidence import generate_key
from callrec.dataops.retention import run_retention
from callrec.dataops.subjects import erase_subject
from callrec.speech import Interval, Segment, Track, Transcript, Word, transcript_stats
from callrec.store import connect_pool, users
from callrec.store.transcripts import delete_transcript, load_transcript, save_transcript
from callrec.web.server import HttpServer

CALLER = "+74951112233"


def _transcript() -> Transcript:
    caller = Track("caller", 0, (Segment(100, 700, " Хочу расторгнуть договор.",
                                         (Word(" Хочу", 100, 300, 0.9), Word(" расторгнуть", 300, 500, 0.9),
                                          Word(" договор.", 500, 700, 0.9))),), (Interval(100, 700),))
    agent = Track("agent", 1, (Segment(750, 950, " Понимаю.", (Word(" Понимаю.", 750, 950, 0.9),)),),
                  (Interval(750, 950),))
    return Transcript((caller, agent), 1000, "ru", model="whisper-base@test")


async def with_transcript(conn: asyncpg.Connection, rec: Path, **kw: Any) -> dict[str, Any]:
    """A finalized call with its real WAV and a transcript made from it (its sha256)."""
    call = await add_call(conn, rec, **kw)
    t = _transcript()
    await conn.execute("INSERT INTO speech_jobs (call_id, state, progress, done_at) VALUES ($1, 'done', 1, now())",
                       call["id"])
    await save_transcript(conn, call["id"], t.to_dict(), transcript_stats(t).to_dict(),
                          recording_sha256=call["sha256"])
    return call


async def has_transcript(conn: asyncpg.Connection, call_id: str) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM transcripts WHERE call_id = $1", call_id))


async def api_delete(database: str, rec: Path, call_id: str) -> tuple[int, dict]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    server = HttpServer(api_settings(database, rec), pool)
    try:
        async with pool.acquire() as c:
            if not await c.fetchval("SELECT true FROM users WHERE name = 'admin1'"):
                await users.add_user(c, "admin1", "admin", PASSWORD, None)
            _, token = await users.create_token(c, f"t-{uuid.uuid4().hex[:6]}", user="admin1")
        await server.start()
        async with aiohttp.ClientSession() as http, http.delete(
                f"http://127.0.0.1:{server.port}/api/v1/calls/{call_id}/audio",
                headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()
    finally:
        await server.stop()
        await pool.close()


async def test_api_audio_delete_takes_the_transcript_and_the_job(database: str, conn: asyncpg.Connection,
                                                                 tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    call = await with_transcript(conn, rec)
    other = await with_transcript(conn, rec)
    status, body = await api_delete(database, rec, call["id"])
    assert status == 200, body
    assert not await has_transcript(conn, call["id"])
    assert await conn.fetchval("SELECT count(*) FROM transcript_segments WHERE call_id = $1", call["id"]) == 0
    assert await conn.fetchval("SELECT count(*) FROM speech_jobs WHERE call_id = $1", call["id"]) == 0
    [entry] = await audit_rows(conn, call["id"], "delete_audio")
    assert entry["details"]["transcript_deleted"] is True
    assert await has_transcript(conn, other["id"])  # only the call's own
    # A worker still transcribing when the audio went cannot store the words afterwards.
    t = _transcript()
    with pytest.raises(asyncpg.CheckViolationError, match=r"audio of call .* was deleted"):
        await save_transcript(conn, call["id"], t.to_dict(), transcript_stats(t).to_dict(),
                              recording_sha256=call["sha256"])


async def test_retention_deletes_transcripts_with_the_audio_and_keeps_the_held(database: str,
                                                                             conn: asyncpg.Connection,
                                                                             tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    old = await with_transcript(conn, rec, age_days=40)
    ancient = await with_transcript(conn, rec, age_days=400)
    held = await with_transcript(conn, rec, age_days=400)
    recent = await with_transcript(conn, rec, age_days=2)
    await set_legal_hold(conn, held["id"], True, actor="counsel", reason="case 9")
    settings = settings_for(database, rec, retention={"audio_days": 30, "metadata_days": 365})
    pool = await connect_pool(database, 1, 2)
    try:
        report = await run_retention(pool, settings.retention, rec)
    finally:
        await pool.close()
    assert (report.audio_deleted, report.anonymized, report.held_skipped) == (2, 1, 1)
    assert not await has_transcript(conn, old["id"]) and not await has_transcript(conn, ancient["id"])
    assert await has_transcript(conn, held["id"]) and await has_transcript(conn, recent["id"])
    [anon] = await audit_rows(conn, ancient["id"], "anonymize")
    assert anon["details"]["transcript_deleted"] is True


async def test_legal_hold_keeps_the_transcript_even_against_direct_sql(database: str, conn: asyncpg.Connection,
                                                                       tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    held = await with_transcript(conn, rec, caller=CALLER)
    await set_legal_hold(conn, held["id"], True, actor="counsel", reason="case 10")
    status, body = await api_delete(database, rec, held["id"])
    assert (status, body) == (409, {"error": "the call is under legal hold"})
    assert await has_transcript(conn, held["id"])
    # Code that does not know about holds is refused by the database.
    with pytest.raises(asyncpg.CheckViolationError, match="legal hold"):
        await delete_transcript(conn, held["id"])
    assert await has_transcript(conn, held["id"])
    # Released, the transcript can go.
    await set_legal_hold(conn, held["id"], False, actor="counsel", reason="case closed")
    assert await delete_transcript(conn, held["id"]) is True


async def test_subject_export_carries_the_dialogue_and_erase_removes_it(database: str, conn: asyncpg.Connection,
                                                                        tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    call = await with_transcript(conn, rec, caller=CALLER)
    bare = await add_call(conn, rec, caller=CALLER)  # not transcribed (yet)
    held = await with_transcript(conn, rec, caller=CALLER)
    await set_legal_hold(conn, held["id"], True, actor="counsel", reason="case 11")
    cfg = write_config(tmp_path / "c.toml", database, rec)
    out = tmp_path / "subject.zip"
    result = run_cli(cfg, "subject", "export", CALLER, "--zip", str(out), "--reference", "DSR-9")
    assert result.returncode == 0, result.stderr
    assert "3 recording(s), 2 transcript(s)" in result.stdout
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        name = f"transcripts/{call['id']}.json"
        data = zf.read(name)
    doc = json.loads(data)
    assert [(d["speaker"], d["start_ms"], d["text"]) for d in doc["dialogue"]] == [
        ("caller", 100, " Хочу расторгнуть договор."), ("agent", 750, " Понимаю.")]
    assert doc["dialogue"][0]["words"][2] == {"text": " договор.", "start_ms": 500, "end_ms": 700,
                                              "probability": 0.9}
    assert doc["recording_sha256"] == call["sha256"] and doc["talk"]["caller_talk_ms"] == 600
    [entry] = [f for f in manifest["files"] if f["path"] == name]
    assert entry["kind"] == "transcript" and entry["sha256"] == hashlib.sha256(data).hexdigest()
    docs = {c["id"]: c for c in manifest["calls"]}
    assert docs[call["id"]]["transcript_file"] == name and "transcript_file" not in docs[bare["id"]]
    assert "dialogue" not in json.dumps(manifest["calls"])  # the words are in the file, not the manifest

    erase = run_cli(cfg, "subject", "erase", CALLER, "--yes")
    assert erase.returncode == 3, erase.stdout + erase.stderr  # the held call is kept
    assert not await has_transcript(conn, call["id"])
    assert await has_transcript(conn, held["id"])
    assert (await load_transcript(conn, held["id"]) or {}).get("segments")


async def test_verify_reports_a_transcript_not_made_from_the_recording(database: str, conn: asyncpg.Connection,
                                                                      tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    good = await with_transcript(conn, rec)
    stale = await with_transcript(conn, rec)
    cfg = write_config(tmp_path / "c.toml", database, rec)
    clean = run_cli(cfg, "verify", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = json.loads(clean.stdout)
    assert report["transcripts_checked"] == 2 and report["transcripts"] == []
    await conn.execute("UPDATE transcripts SET recording_sha256 = $2 WHERE call_id = $1", stale["id"], "cd" * 32)
    bad = run_cli(cfg, "verify", "--json")
    assert bad.returncode == 3, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert report["problems"] == 1 and report["ok"] == 2
    [item] = report["transcripts"]
    assert (item["id"], item["transcript_sha256"], item["recording_sha256"]) == (stale["id"], "cd" * 32,
                                                                                 stale["sha256"])
    text = run_cli(cfg, "verify")
    assert text.returncode == 3 and f"TRANSCRIPT {stale['id']}" in text.stdout and good["id"] not in text.stdout
    assert "2 transcript(s) checked, 1 not matching" in text.stdout
    [entry] = (await audit_rows(conn, action="verify"))[-1:]
    assert entry["details"]["transcripts"] == 1


async def test_signed_evidence_export_includes_the_transcript_when_asked(database: str, conn: asyncpg.Connection,
                                                                         tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    call = await with_transcript(conn, rec)
    key = tmp_path / "keys" / "signing.pem"
    cfg = write_config(tmp_path / "c.toml", database, rec, integrity={"signing_key": str(key)})
    assert run_cli(cfg, "keys", "generate").returncode == 0
    plain = tmp_path / "plain.zip"
    res = run_cli(cfg, "export", "--manifest", "--zip", str(plain), "--call", call["id"])
    assert res.returncode == 0, res.stderr
    with zipfile.ZipFile(plain) as zf:
        assert not [n for n in zf.namelist() if n.startswith("transcripts/")]
    out = tmp_path / "with.zip"
    res = run_cli(cfg, "export", "--manifest", "--transcripts", "--zip", str(out), "--call", call["id"])
    assert res.returncode == 0, res.stderr
    assert "1 recording(s), 1 transcript(s)" in res.stdout
    with zipfile.ZipFile(out) as zf:
        doc = json.loads(zf.read(f"transcripts/{call['id']}.json"))
    assert doc["call_id"] == call["id"] and len(doc["dialogue"]) == 2
    checked = run_cli(cfg, "verify-manifest", str(out), "--public-key", str(key) + ".pub", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["files_ok"] == 2
    # Tampering with the transcript breaks the manifest check.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.startswith("transcripts/"):
                data = data.replace("расторгнуть".encode(), "продлить".encode())
            zout.writestr(item, data)
    bad = run_cli(cfg, "verify-manifest", str(tampered), "--public-key", str(key) + ".pub")
    assert bad.returncode != 0 and "transcripts/" in bad.stdout
    entries = await audit_rows(conn, call["id"], "evidence_export")
    assert [e["details"]["transcripts"] for e in entries] == [False, True]





async def test_api_evidence_export_with_transcripts(database: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    call = await with_transcript(conn, rec)
    key = tmp_path / "signing.pem"
    generate_key(key)
    settings = make_settings(None, database, recordings=local_recordings(rec), http={"listen": "127.0.0.1:0"},
                             integrity={"signing_key": str(key)})
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    server = HttpServer(settings, pool)
    try:
        await users.add_user(conn, "sec1", "security", PASSWORD, None)
        _, token = await users.create_token(conn, "t-evidence", user="sec1")
        await server.start()
        url = f"http://127.0.0.1:{server.port}/api/v1/calls/export/evidence"
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(url, params={"transcripts": "maybe"}, headers=auth) as resp:
                assert resp.status == 400 and "transcripts" in (await resp.json())["error"]
            async with http.get(url, params={"transcripts": "true", "number": "+15550001"}, headers=auth) as resp:
                assert resp.status == 200, await resp.text()
                (tmp_path / "e.zip").write_bytes(await resp.read())
    finally:
        await server.stop()
        await pool.close()
    with zipfile.ZipFile(tmp_path / "e.zip") as zf:
        manifest = json.loads(zf.read("manifest.json"))
        doc = json.loads(zf.read(f"transcripts/{call['id']}.json"))
    assert [f["kind"] for f in manifest["files"]] == ["recording", "transcript"]
    assert doc["dialogue"][1]["text"] == " Понимаю."
    [entry] = await audit_rows(conn, call["id"], "evidence_export")
    assert entry["details"]["transcripts"] is True


async def test_least_privilege_app_role_deletes_transcripts_but_not_held_ones(database: str,
                                                                             conn: asyncpg.Connection,
                                                                             tmp_path: Path) -> None:
    """docs/sql/app_role.sql is enough for the transcript, its job and its alerts to go with the audio
    (retention and subject erase as the daemon's role), and that role can neither delete a held call's
    transcript nor switch the guard off."""
    role = f"callrec_app_{uuid.uuid4().hex[:8]}"
    statements = [line.replace(':"app"', f'"{role}"')
                  for line in (REPO / "docs" / "sql" / "app_role.sql").read_text().splitlines()
                  if line.strip() and not line.startswith("--")]
    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        for statement in statements:
            await conn.execute(statement)
        rec = tmp_path / "rec"
        old = await with_transcript(conn, rec, age_days=40)
        subject = await with_transcript(conn, rec, caller=CALLER)
        held = await with_transcript(conn, rec, age_days=40)
        await conn.execute("INSERT INTO alerts (rule, call_id, kind, phrase, speaker, offset_ms) "
                           "VALUES ('termination', $1, 'said', 'расторгнуть', 'caller', 300)", subject["id"])
        await set_legal_hold(conn, held["id"], True, actor="counsel", reason="case 12")
        parts = urlsplit(database)
        app_dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        pool = await connect_pool(app_dsn, 1, 2)
        try:
            async with pool.acquire() as app:
                with pytest.raises(asyncpg.CheckViolationError, match="legal hold"):
                    await delete_transcript(app, held["id"])
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute("ALTER TABLE transcripts DISABLE TRIGGER transcripts_lifecycle_guard")
            settings = settings_for(database, rec, retention={"audio_days": 30})
            report = await run_retention(pool, settings.retention, rec)
            assert (report.audio_deleted, report.held_skipped, report.errors) == (1, 1, 0), report.error_samples
            outcomes = await erase_subject(pool, [CALLER], rec, actor=cli_principal())
            assert [o.result for o in outcomes] == ["anonymized"]
        finally:
            await pool.close()
        assert not await has_transcript(conn, old["id"]) and not await has_transcript(conn, subject["id"])
        assert await conn.fetchval("SELECT count(*) FROM alerts WHERE call_id = $1", subject["id"]) == 0
        assert await has_transcript(conn, held["id"])
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
