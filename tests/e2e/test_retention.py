"""Retention, legal hold and the deletion guard, against a real PostgreSQL and real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from support import REPO
from support.dataops_helpers import add_call, audit_rows, run_cli, settings_for, write_config

from callrec.dataops.deletion import anonymize, delete_audio, set_legal_hold
from callrec.dataops.retention import RetentionJob, run_retention
from callrec.store import connect_pool


async def test_retention_job_keeps_the_held_call_and_audits_the_rest(database: str, conn: asyncpg.Connection,
                                                                     tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    old = [await add_call(conn, rec, age_days=40) for _ in range(3)]
    held = await add_call(conn, rec, age_days=40)
    recent = await add_call(conn, rec, age_days=2)
    ancient = await add_call(conn, rec, age_days=400, caller="+15559999", parties=[("+15559999", "caller")],
                             tags=["complaint from the caller"])
    ancient_held = await add_call(conn, rec, age_days=400)
    open_call = await add_call(conn, rec, age_days=40, finalized=False)
    for c in (held, ancient_held):
        assert await set_legal_hold(conn, c["id"], True, actor="lawyer", reason="case 12/2026") is not None
    settings = settings_for(database, rec, retention={"audio_days": 30, "metadata_days": 365, "batch_size": 2,
                                                      "interval": 3600})
    pool = await connect_pool(database, 1, 2)
    job = RetentionJob(pool, settings.retention, rec)
    task = asyncio.create_task(job.run())
    try:
        await asyncio.wait_for(job.ran.wait(), 30)
    finally:
        job.stop.set()
        await asyncio.wait_for(task, 10)
        await pool.close()
    assert job.last_report is not None
    assert (job.last_report.audio_deleted, job.last_report.anonymized, job.last_report.held_skipped,
            job.last_report.errors) == (4, 1, 2, 0)

    for c in old:
        r = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", c["id"])
        assert not c["path"].exists()
        assert r["audio_deleted_by"] == "retention" and r["audio_deleted_reason"] == "retention"
        assert r["audio_deleted_at"] is not None and r["anonymized_at"] is None
        assert r["caller_number"] == "+15550001" and r["recording_sha256"] == c["sha256"]  # the row stays
        [entry] = await audit_rows(conn, c["id"], "delete_audio")
        assert entry["actor"] == "retention" and entry["details"]["reason"] == "retention"
        assert entry["details"]["file_existed"] is True
    for c in (held, ancient_held, recent, open_call):
        r = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", c["id"])
        assert c["path"].exists() and r["audio_deleted_at"] is None and r["anonymized_at"] is None
        assert await audit_rows(conn, c["id"], "delete_audio") == []
    # The year-old call is a tombstone: no audio, no personal fields, statistics intact.
    r = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", ancient["id"])
    assert not ancient["path"].exists()
    assert r["anonymized_at"] is not None and r["anonymized_reason"] == "retention"
    assert (r["caller_number"], r["caller_name"], r["called_number"], r["uniqueid"], r["channel"]) == (
        None, None, None, "", "")
    assert list(r["warnings"]) == []
    assert (r["consent"], r["recording_duration"], r["started_at"]) == ("implied", 1.0, ancient["started_at"])
    party = await conn.fetchrow("SELECT number, name FROM call_parties WHERE call_id = $1", ancient["id"])
    assert (party["number"], party["name"]) == (None, None)
    assert await conn.fetchval("SELECT count(*) FROM call_tags WHERE call_id = $1", ancient["id"]) == 0
    assert [e["action"] for e in await audit_rows(conn, ancient["id"])] == ["delete_audio", "anonymize"]
    assert await conn.fetchval("SELECT count(*) FROM calls") == 8
    run = await conn.fetchrow("SELECT * FROM retention_runs ORDER BY id DESC LIMIT 1")
    assert (run["audio_deleted"], run["anonymized"], run["held_skipped"], run["actor"]) == (4, 1, 2, "retention")
    assert run["finished_at"] is not None


async def test_per_rule_retention(database: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    short = await add_call(conn, rec, age_days=10, rule="short")
    default = await add_call(conn, rec, age_days=10)
    forever = await add_call(conn, rec, age_days=100, rule="forever")
    default_old = await add_call(conn, rec, age_days=100)
    settings = settings_for(
        database, rec, policy={"rules": [{"name": "short", "did": "1*"}, {"name": "forever", "did": "2*"}]},
        retention={"audio_days": 30, "rules": {"short": {"audio_days": 7}, "forever": {"audio_days": 0}}})
    pool = await connect_pool(database, 1, 2)
    try:
        report = await run_retention(pool, settings.retention, rec)
    finally:
        await pool.close()
    assert report.audio_deleted == 2
    assert not short["path"].exists() and not default_old["path"].exists()
    assert default["path"].exists() and forever["path"].exists()


async def test_the_database_refuses_to_delete_held_calls(database: str, conn: asyncpg.Connection,
                                                         tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    c = await add_call(conn, rec)
    await set_legal_hold(conn, c["id"], True, actor="security-officer", reason="litigation")
    # Code that knows nothing about the hold (an older delete route, a hand-written script) is stopped too.
    with pytest.raises(asyncpg.CheckViolationError, match="legal hold"):
        await conn.execute("UPDATE calls SET audio_deleted_at = now() WHERE id = $1", c["id"])
    with pytest.raises(asyncpg.CheckViolationError, match="legal hold"):
        await conn.execute("UPDATE calls SET anonymized_at = now() WHERE id = $1", c["id"])
    with pytest.raises(asyncpg.CheckViolationError, match="legal hold"):
        await conn.execute("DELETE FROM calls WHERE id = $1", c["id"])
    # The deletion helpers refuse, keep the file, and audit the refused attempt.
    out = await delete_audio(conn, c["id"], rec, actor="someone")
    assert (out.result, out.detail) == ("held", "litigation")
    out = await anonymize(conn, c["id"], rec, actor="someone", reason="subject_erase")
    assert out.result == "held"
    assert c["path"].exists()
    refused = await audit_rows(conn, c["id"], "delete_refused")
    assert [e["details"]["what"] for e in refused] == ["audio", "call"]
    # Released (audited), the same deletion goes through.
    await set_legal_hold(conn, c["id"], False, actor="security-officer", reason="case closed")
    r = await conn.fetchrow("SELECT legal_hold, legal_hold_by, legal_hold_reason FROM calls WHERE id = $1", c["id"])
    assert (r["legal_hold"], r["legal_hold_by"], r["legal_hold_reason"]) == (False, "security-officer", "case closed")
    assert (await delete_audio(conn, c["id"], rec, actor="someone")).result == "deleted"
    assert not c["path"].exists()
    actions = [e["action"] for e in await audit_rows(conn, c["id"])]
    assert actions == ["legal_hold", "delete_refused", "delete_refused", "legal_hold_release", "delete_audio"]


async def test_cli_retention_dry_run_then_run(database: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    due = await add_call(conn, rec, age_days=40)
    held = await add_call(conn, rec, age_days=40)
    await set_legal_hold(conn, held["id"], True, actor="x", reason="case 7")
    cfg = write_config(tmp_path / "c.toml", database, rec, retention={"audio_days": 30})
    dry = run_cli(cfg, "retention", "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 1 recording(s)" in dry.stdout and "1 call(s) kept by legal hold" in dry.stdout
    assert due["path"].exists()
    assert await conn.fetchval("SELECT audio_deleted_at FROM calls WHERE id = $1", due["id"]) is None
    real = run_cli(cfg, "retention", "run")
    assert real.returncode == 0, real.stderr
    assert "deleted 1 recording(s)" in real.stdout
    assert not due["path"].exists() and held["path"].exists()
    [entry] = await audit_rows(conn, due["id"], "delete_audio")
    assert entry["actor"].startswith("cli:")
    status = run_cli(cfg, "retention", "status")
    assert status.returncode == 0 and "due now: 0 recording(s)" in status.stdout
    assert "1 kept by legal hold" in status.stdout
    assert "(dry run)" in status.stdout


async def test_cli_hold_set_list_release(database: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    c = await add_call(conn, rec)
    cfg = write_config(tmp_path / "c.toml", database, rec)
    out = run_cli(cfg, "hold", "set", c["id"], "--reason", "case 99")
    assert out.returncode == 0, out.stderr
    listing = run_cli(cfg, "hold", "list")
    assert c["id"] in listing.stdout and "case 99" in listing.stdout
    missing = run_cli(cfg, "hold", "set", "00000000-0000-0000-0000-000000000000", "--reason", "x")
    assert missing.returncode == 1 and "no such call" in missing.stderr
    garbage = run_cli(cfg, "hold", "set", "not-a-uuid", "--reason", "x")  # a typo, not an unknown call
    assert garbage.returncode == 2 and "expected a call id (UUID), got 'not-a-uuid'" in garbage.stderr
    assert run_cli(cfg, "hold", "release", c["id"]).returncode == 0
    await delete_audio(conn, c["id"], rec, actor="x")
    late = run_cli(cfg, "hold", "set", c["id"], "--reason", "too late")
    assert late.returncode == 0 and "already audio deleted" in late.stdout
    assert run_cli(cfg, "hold", "release", c["id"]).returncode == 0
    assert "(no calls under legal hold)" in run_cli(cfg, "hold", "list").stdout


async def test_least_privilege_app_role_runs_retention_and_erase(database: str, conn: asyncpg.Connection,
                                                                tmp_path: Path) -> None:
    """docs/sql/app_role.sql is enough for every deletion path, and the
    app role still cannot delete rows or switch the legal-hold guard off."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    from callrec.access import cli_principal
    from callrec.dataops.subjects import erase_subject

    role = f"callrec_app_{uuid.uuid4().hex[:8]}"
    docs = REPO / "docs" / "sql"
    statements = [line.replace(':"app"', f'"{role}"') for name in ("app_role.sql",)
                  for line in (docs / name).read_text().splitlines() if line.strip() and not line.startswith("--")]
    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        for statement in statements:
            await conn.execute(statement)
        rec = tmp_path / "rec"
        old = await add_call(conn, rec, age_days=40)
        subject = await add_call(conn, rec, caller="+15554444", tags=["x"], parties=[("+15554444", "caller")])
        held = await add_call(conn, rec, age_days=40)
        parts = urlsplit(database)
        app_dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        pool = await connect_pool(app_dsn, 1, 2)
        try:
            async with pool.acquire() as app:
                await set_legal_hold(app, held["id"], True, actor="svc", reason="case")
                for attempt in ("DELETE FROM calls", "ALTER TABLE calls DISABLE TRIGGER calls_legal_hold_guard"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await app.execute(attempt)
            settings = settings_for(database, rec, retention={"audio_days": 30})
            report = await run_retention(pool, settings.retention, rec)
            assert (report.audio_deleted, report.held_skipped, report.errors) == (1, 1, 0)
            outcomes = await erase_subject(pool, ["+15554444"], rec, actor=cli_principal())
            assert [o.result for o in outcomes] == ["anonymized"]
        finally:
            await pool.close()
        assert not old["path"].exists() and not subject["path"].exists() and held["path"].exists()
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')


async def test_anonymize_blanks_the_hook_outbox(database: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """The policy part's post-recording hook outbox (hook_jobs) carries call metadata: an erased call
    is not sent on.  The table is made here when that part's migration is not in this checkout."""
    await conn.execute("""CREATE TABLE IF NOT EXISTS hook_jobs (
        id bigserial PRIMARY KEY, call_id uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
        hook text NOT NULL, payload jsonb NOT NULL, state text NOT NULL DEFAULT 'pending', attempts integer
        NOT NULL DEFAULT 0, last_error text, UNIQUE (call_id, hook))""")
    rec = tmp_path / "rec"
    c = await add_call(conn, rec, caller="+15556666")
    for hook, state in (("command", "done"), ("webhook", "pending")):
        await conn.execute("INSERT INTO hook_jobs (call_id, hook, payload, state) VALUES ($1, $2, $3::jsonb, $4)",
                           c["id"], hook, '{"caller_number": "+15556666"}', state)
    out = await anonymize(conn, c["id"], rec, actor="dpo", reason="subject_erase")
    assert out.result == "anonymized" and out.audio_deleted
    rows = await conn.fetch("SELECT hook, payload::text AS payload, state, last_error FROM hook_jobs ORDER BY hook")
    assert all("+15556666" not in r["payload"] for r in rows)
    assert [(r["hook"], r["state"]) for r in rows] == [("command", "done"), ("webhook", "failed")]
    assert "anonymized" in rows[1]["last_error"]
    [entry] = await audit_rows(conn, c["id"], "anonymize")
    assert entry["details"]["hook_jobs"] == 2


async def test_deletion_never_leaves_the_recordings_folder(database: str, conn: asyncpg.Connection,
                                                           tmp_path: Path) -> None:
    """A row whose path climbs out, or a symlink planted in the folder, never costs another file."""
    rec = tmp_path / "rec"
    outside = tmp_path / "precious.wav"
    outside.write_bytes(b"keep me")
    climbing = await add_call(conn, rec)
    await conn.execute("UPDATE calls SET recording_path = '../precious.wav' WHERE id = $1", climbing["id"])
    linked = await add_call(conn, rec)
    victim = await add_call(conn, rec)
    linked["path"].unlink()
    linked["path"].symlink_to(victim["path"])
    for c in (climbing, linked):
        assert (await delete_audio(conn, c["id"], rec, actor="admin")).result == "deleted"
    assert outside.read_bytes() == b"keep me"
    assert victim["path"].exists() and not linked["path"].is_symlink()
    [entry] = await audit_rows(conn, climbing["id"], "delete_audio")
    assert entry["details"]["file_existed"] is False
