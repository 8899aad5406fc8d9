"""Test helpers for data operations: call rows generated in a real database, real WAV files."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import soundfile

from callrec.config.settings import Settings
from callrec.recording.files import measure
from support.cli import CALLREC, run_cli
from support.settings import local_recordings, make_settings, raw_settings

__all__ = ["CALLREC", "add_call", "audit_rows", "make_wav", "run_cli", "settings_for", "write_config"]


def settings_for(dsn: str, recordings: Path, **sections: dict[str, Any]) -> Settings:
    """Settings of the data operations (no Asterisk): the database and the recordings folder."""
    return make_settings(None, dsn, recordings=local_recordings(recordings), **sections)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def write_config(path: Path, dsn: str, recordings: Path, extra: str = "", **sections: dict[str, Any]) -> Path:
    base = raw_settings(None, dsn, recordings=local_recordings(recordings), **sections)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def make_wav(path: Path, seconds: float = 1.0, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * seconds)) / 8000.0
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), 8000, subtype="PCM_16")


async def add_call(conn: asyncpg.Connection, recordings: Path, *, age_days: float = 0.0, caller: str = "+15550001",
                   called: str = "100", rule: str | None = None, recorded: bool = True, finalized: bool = True,
                   parties: Sequence[tuple[str, str]] = (), tags: Sequence[str] = (), name: str = "Caller Name",
                   seconds: float = 1.0) -> dict[str, Any]:
    """One finalized call row (as the daemon writes it) and, when recorded, its real WAV measured."""
    call_id = str(uuid.uuid4())
    started = datetime.now(UTC) - timedelta(days=age_days)
    rel = f"{started:%Y/%m/%d}/{call_id}.wav"
    facts: dict[str, Any] = {}
    if recorded:
        path = recordings / rel
        make_wav(path, seconds, 300 + hash(call_id) % 500)
        facts = measure(path)
    await conn.execute(
        """INSERT INTO calls (id, door, uniqueid, linkedid, channel, caller_number, caller_name, called_number,
               context, policy_rule, consent_mode, state, consent, keys_pressed, notice_prompt, notice_prompt_sha256,
               notice_prompt_duration, notice_completed, started_at, notice_started_at, notice_finished_at,
               consent_at, ended_at, finalized_at, recording_status, recording_path, recording_duration,
               recording_bytes, recording_rms_dbfs, recording_peak_dbfs, recording_sha256, warnings, agent)
           VALUES ($1, 'ari', $2, $2, $3, $4, $5, $6, 'from-trunk', $7, 'notice', 'ended', 'implied', '',
               '/usr/share/asterisk/sounds/callrec/en/notice.wav', $8, 5.2, true, $9,
               $9::timestamptz + interval '1 s', $9::timestamptz + interval '6 s', $9::timestamptz + interval '6 s',
               $9::timestamptz + interval '60 s', $10, $11, $12, $13, $14, $15, $16, $17,
               ARRAY['a warning quoting ' || $4::text], '201')""",
        call_id, f"{started.timestamp():.3f}", f"PJSIP/trunk-{call_id[:8]}", caller, name, called, rule,
        "ab" * 32, started, (started + timedelta(seconds=61)) if finalized else None,
        "ready" if recorded else "none", rel if recorded else None, facts.get("recording_duration"),
        facts.get("recording_bytes"), facts.get("recording_rms_dbfs"), facts.get("recording_peak_dbfs"),
        facts.get("recording_sha256"))
    for seq, (number, role) in enumerate(parties):
        await conn.execute(
            "INSERT INTO call_parties (call_id, seq, number, name, channel, role, joined_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)", call_id, seq, number, f"party {number}", f"PJSIP/{number}-1",
            role, started)
    for tag in tags:
        await conn.execute("INSERT INTO call_tags (call_id, tag, created_by) VALUES ($1, $2, 'tester')", call_id, tag)
    return {"id": call_id, "path": recordings / rel if recorded else None, "rel": rel, "started_at": started,
            "sha256": facts.get("recording_sha256")}


async def audit_rows(conn: asyncpg.Connection, call_id: str | None = None, action: str | None = None) -> list[dict]:
    rows = await conn.fetch(
        "SELECT * FROM audit_log WHERE ($1::uuid IS NULL OR call_id = $1::uuid) AND ($2::text IS NULL OR action = $2) "
        "ORDER BY id", call_id, action)
    out = []
    for r in rows:
        d = dict(r)
        d["details"] = json.loads(d["details"]) if isinstance(d["details"], str) else d["details"]
        out.append(d)
    return out
