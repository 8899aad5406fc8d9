"""Keyword alerts (migration 009) across the data lifecycle: anonymizing a call removes them, deleting only
its audio keeps them.  Real PostgreSQL and files; synthetic transcripts stored with save_transcript."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from support.dataops_helpers import audit_rows, settings_for
from test_transcript_lifecycle import with_transcript

from callrec.dataops.retention import run_retention
from callrec.store import connect_pool


async def test_anonymizing_removes_the_calls_alerts_audio_deletion_keeps_them(database: str,
                                                                             conn: asyncpg.Connection,
                                                                             tmp_path: Path) -> None:
    """Alerts (migration 009) say what was said and when: kept with the statistics when only the audio
    goes, erased with the caller's personal fields."""
    rec = tmp_path / "rec"
    audio_only = await with_transcript(conn, rec, age_days=40)
    erased = await with_transcript(conn, rec, age_days=400)
    for call in (audio_only, erased):
        await conn.execute("INSERT INTO alerts (rule, call_id, kind, phrase, speaker, offset_ms) "
                           "VALUES ('termination', $1, 'said', 'расторгнуть договор', 'caller', 300)", call["id"])
    settings = settings_for(database, rec, retention={"audio_days": 30, "metadata_days": 365})
    pool = await connect_pool(database, 1, 2)
    try:
        report = await run_retention(pool, settings.retention, rec)
    finally:
        await pool.close()
    assert (report.audio_deleted, report.anonymized) == (2, 1)
    assert await conn.fetchval("SELECT count(*) FROM alerts WHERE call_id = $1", audio_only["id"]) == 1
    assert await conn.fetchval("SELECT count(*) FROM alerts WHERE call_id = $1", erased["id"]) == 0
    [anon] = await audit_rows(conn, erased["id"], "anonymize")
    assert anon["details"]["alerts_removed"] == 1
